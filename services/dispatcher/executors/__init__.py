"""One executor per action type. Each takes its typed action and returns a Delivery, or raises an
error from services.common.errors (via services.dispatcher.delivery) that decides the record's fate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schemas.events import (
    ActionBase,
    EmailRequested,
    HttpRequested,
    RowAppendRequested,
    ScheduleCallRequested,
    SlackRequested,
    TaskRequested,
    TeamAlertRequested,
    TeamsRequested,
    WebhookRequested,
)
from services.dispatcher.delivery import Delivery, HttpSender
from services.dispatcher.executors.email import EmailExecutor
from services.dispatcher.executors.http import HttpRequestExecutor
from services.dispatcher.executors.publish import PublishOrPostExecutor
from services.dispatcher.executors.sheets import SheetsExecutor
from services.dispatcher.executors.slack import SlackExecutor
from services.dispatcher.executors.teams import TeamsExecutor
from services.dispatcher.executors.webhook import WebhookExecutor
from services.dispatcher.registry import Registry
from services.dispatcher.smtp import SmtpPool


@dataclass(frozen=True)
class Executors:
    webhook: WebhookExecutor
    http: HttpRequestExecutor
    sheets: SheetsExecutor
    email: EmailExecutor
    slack: SlackExecutor
    teams: TeamsExecutor
    publish_or_post: PublishOrPostExecutor  # schedule_call, task and team_alert

    @classmethod
    def build(
        cls,
        registry: Registry,
        http: HttpSender,
        pools: Mapping[str, SmtpPool],
        default_email: str | None,
        console_url: str | None = None,
    ) -> Executors:
        """`console_url`: where people open the console; Slack and Teams link buttons point into it."""
        return cls(
            webhook=WebhookExecutor(registry, http),
            http=HttpRequestExecutor(registry, http),
            sheets=SheetsExecutor(registry, http),
            email=EmailExecutor(registry, pools, default_email),
            slack=SlackExecutor(registry, http, console_url),
            teams=TeamsExecutor(registry, http, console_url),
            publish_or_post=PublishOrPostExecutor(registry, http),
        )

    async def run(self, action: ActionBase) -> Delivery:
        match action:
            case WebhookRequested():
                return await self.webhook(action)
            case HttpRequested():
                return await self.http(action)
            case RowAppendRequested():
                return await self.sheets(action)
            case EmailRequested():
                return await self.email(action)
            case SlackRequested():
                return await self.slack(action)
            case TeamsRequested():
                return await self.teams(action)
            case ScheduleCallRequested() | TaskRequested() | TeamAlertRequested():
                return await self.publish_or_post(action)
        raise TypeError(f"no executor for {type(action).__name__}")
