"""slack: a message to Slack, plain text or Block Kit (services.dispatcher.executors.cards).

Two ways in, chosen by the `slack` destination:

    incoming webhook   POST {"text", "blocks"} to the webhook URL (usually `url_secret`: the URL is the
                       secret); Slack answers "ok", or an HTTP error with a short code (invalid_blocks,
                       channel_is_archived as 410: the destination is disabled).
    bot token          POST chat.postMessage with `Authorization: Bearer xoxb-...` and a channel; Slack
                       answers 200 with {"ok": false, "error": ...} for most failures: ratelimited,
                       internal_error, fatal_error, service_unavailable and request_timeout are
                       retryable, the others (channel_not_found, not_in_channel, invalid_auth...)
                       permanent. The message's `ts` is the action's result_id. Its answer echoes the
                       message, so it is read up to a few times the message's size (ANSWER_ROOM).

Slack's 429 carries Retry-After, honoured through the project's one parser (delivery/errors). Link
previews are off: a caller's URL in the text is not fetched and shown by Slack. Slack has no
idempotency key: a timed-out attempt that Slack did post is posted again on the retry.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.events import RESULT_ID_CHARS, SlackRequested
from services.common.errors import PermanentError, PostcallError, RetryableError
from services.dispatcher.delivery import Answer, Delivery, Exchange, HttpSender, failure
from services.dispatcher.destinations import SlackDestination
from services.dispatcher.executors.cards import block_kit, console_link, cut
from services.dispatcher.registry import Registry

RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
TEXT_LIMIT = 3000  # the notification text beside blocks; a plain message may be longer
PLAIN_LIMIT = 40_000  # chat.postMessage truncates beyond this
# chat.postMessage's ok:true answer echoes the message (text and blocks, "/" and non-ASCII escaped: up to
# 3x the bytes sent) beside its metadata; cut short, it would not parse and a posted message would fail
ANSWER_ROOM = 16 * 1024


class SlackExecutor:
    def __init__(self, registry: Registry, http: HttpSender, console_url: str | None = None) -> None:
        self._registry = registry
        self._http = http
        self._console_url = console_url

    async def __call__(self, action: SlackRequested) -> Delivery:
        dest = self._registry.get(action.destination, SlackDestination)
        message = self.message(action)
        if dest.token is None:
            body = orjson.dumps(message)
            return await self._http.send(
                dest, action_type=action.type, msg_id=action.action_id, body=body, supersedes=action.supersedes
            )
        channel = action.channel or dest.channel
        if channel is None:
            raise failure(PermanentError("no channel: set `channel` on the action or the destination"), dest.name)
        return await self._post_message(dest, action, {"channel": channel, **message})

    def message(self, action: SlackRequested) -> dict[str, Any]:
        base: dict[str, Any] = {"unfurl_links": False, "unfurl_media": False}
        if action.card is None:
            return {**base, "text": cut(action.text, PLAIN_LIMIT)}
        link = console_link(self._console_url, action.conversation_id)
        blocks = block_kit(action.text, action.card, link)
        return {**base, "text": cut(action.text or action.card.title or "", TEXT_LIMIT), "blocks": blocks}

    async def _post_message(self, dest: SlackDestination, action: SlackRequested, message: dict[str, Any]) -> Delivery:
        url = f"{dest.endpoint.rstrip('/')}/chat.postMessage"
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {dest.token}",
            "accept": "application/json",
        }
        body = orjson.dumps(message)

        async def run(exchange: Exchange) -> Answer:
            return await exchange.request("POST", url, headers, body, read_limit=4 * len(body) + ANSWER_ROOM)

        answer, latency_ms = await self._http.attempt(dest, action.type, run, judge=judge)
        ts = _answer(answer).get("ts")  # cut as ActionCompleted's result_id: the message is posted either way
        result_id = ts[:RESULT_ID_CHARS] if isinstance(ts, str) else None
        return Delivery("delivered", dest.name, answer.status, latency_ms, result_id=result_id)


def judge(answer: Answer) -> PostcallError | None:
    """A Web API answer: 200 with ok true, or an error code saying whether a retry can help."""
    data = _answer(answer)
    if data.get("ok") is True:
        return None
    code = data.get("error") if isinstance(data.get("error"), str) else "an answer without ok"
    message = f"Slack refused the message: {code}"
    return RetryableError(message) if code in RETRYABLE_ERRORS else PermanentError(message)


def _answer(answer: Answer) -> dict[str, Any]:
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
