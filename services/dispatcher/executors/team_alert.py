"""team_alert: an in-app alert. Published for the notification service, or POSTed to one."""

from __future__ import annotations

from schemas.events import TeamAlertRequested
from services.dispatcher.delivery import Delivery
from services.dispatcher.executors.publish import PublishOrPost


class TeamAlertExecutor(PublishOrPost):
    async def __call__(self, action: TeamAlertRequested) -> Delivery:
        return await self.publish_or_post(action, action.type)
