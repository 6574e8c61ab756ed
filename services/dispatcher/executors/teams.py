"""teams: an Adaptive Card to a Microsoft Teams incoming webhook (a Workflows "when a Teams webhook
request is received" URL, or a legacy connector URL), with the same content as a Slack Block Kit
message (services.dispatcher.executors.cards). Not signed: the URL is the secret (`url_secret`).
Workflows answer 202 Accepted, connectors 200. A connector answers 200 whatever became of the message:
"1" when it was posted, "Webhook message delivery failed with error: ..." when it was not; Microsoft's
engineers: only a number is a success, and a connector answers 200 to what it thinks retryable
(MicrosoftDocs/msteams-docs#1810, #9064, #9698). So such a 200 is a failure: when the text names the
status Teams gave it ("... returned HTTP error 429 ..."), that status decides, as if Teams had answered it;
when it names none ("Error contacting Microsoft Teams endpoint", #1736), it is retryable."""

from __future__ import annotations

import re

import orjson

from schemas.events import TeamsRequested
from services.common.errors import PermanentError, PostcallError, RetryableError, classify_http_status
from services.dispatcher.delivery import Answer, Delivery, HttpSender
from services.dispatcher.destinations import TeamsDestination
from services.dispatcher.executors.cards import adaptive_card, console_link
from services.dispatcher.registry import Registry


class TeamsExecutor:
    def __init__(self, registry: Registry, http: HttpSender, console_url: str | None = None) -> None:
        self._registry = registry
        self._http = http
        self._console_url = console_url

    async def __call__(self, action: TeamsRequested) -> Delivery:
        dest = self._registry.get(action.destination, TeamsDestination)
        link = console_link(self._console_url, action.conversation_id)
        body = orjson.dumps(adaptive_card(action.text, action.card, link))
        return await self._http.send(dest, action_type=action.type, msg_id=action.action_id, body=body, judge=judge)


_NOT_POSTED = re.compile(rb"\s*Webhook message delivery failed", re.IGNORECASE)
_TEAMS_STATUS = re.compile(rb"HTTP error ([0-9]{3})\b")


def judge(answer: Answer) -> PostcallError | None:
    """A connector's 200 that says the message was not posted: the status Teams gave it decides, and
    without one it is retryable (the answer's text follows in the error, redacted)."""
    if answer.status != 200 or not _NOT_POSTED.match(answer.body):
        return None
    found = _TEAMS_STATUS.search(answer.body)
    if found is None:
        return RetryableError("Teams did not post the message: the connector's 200 reports a failure")
    status = int(found.group(1))
    message = f"Teams did not post the message: HTTP {status} behind the connector's 200"
    error = classify_http_status(status)
    return RetryableError(message) if isinstance(error, RetryableError) else PermanentError(message)
