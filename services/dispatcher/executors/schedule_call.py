"""schedule_call: a callback. Published for a dialer subscribed to the topic, or POSTed to a telephony endpoint."""

from __future__ import annotations

from schemas.events import ScheduleCallRequested
from services.dispatcher.delivery import Delivery
from services.dispatcher.executors.publish import PublishOrPost


class ScheduleCallExecutor(PublishOrPost):
    async def __call__(self, action: ScheduleCallRequested) -> Delivery:
        return await self.publish_or_post(action, action.type)
