"""task: a follow-up task. Published for a task service subscribed to the topic, or POSTed to one."""

from __future__ import annotations

from schemas.events import TaskRequested
from services.dispatcher.delivery import Delivery
from services.dispatcher.executors.publish import PublishOrPost


class TaskExecutor(PublishOrPost):
    async def __call__(self, action: TaskRequested) -> Delivery:
        return await self.publish_or_post(action, action.type)
