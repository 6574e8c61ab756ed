"""One message, two layouts: Slack Block Kit and a Teams Adaptive Card with the same content — a header,
the text, labelled fields, a context line and a link button to the call's console page.

Slack: the router has already escaped every value (&, <, >), so a caller's `<!channel>` or
`<https://evil|https://good>` is text; cuts never split an escape; mrkdwn text objects are verbatim, so
Slack does not link a caller's bare URL or #channel, nor parse a mention in it. Teams: every piece of text goes into
a RichTextBlock's TextRun, which Adaptive Cards never parse as Markdown (a TextBlock or a FactSet would
turn a caller's `[here](https://evil)` into a link).

Slack's limits (Block Kit reference): header 150 characters, section text 3,000, a field 2,000 and ten
fields per section, button text 75, 50 blocks. Longer text is cut with an ellipsis rather than refused
by Slack with invalid_blocks. Teams refuses a message over 28 KB (HTTP 413 from a connector; a Workflows
flow fails to post it): the card's longest texts are cut to one length, with an ellipsis, so the JSON is
at most TEAMS_MESSAGE_BYTES, leaving room for what Teams adds around it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import orjson

from schemas.events import MessageCard

_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
FIELDS_PER_SECTION = 10
TEAMS_MESSAGE_BYTES = 24 * 1024  # of the JSON sent; Teams' limit is 28 KB for the message it posts


def console_link(base_url: str | None, conversation_id: str) -> str | None:
    """The call's console page: <base>/console/conversations/<id>, the id encoded as one segment."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/console/conversations/{quote(conversation_id, safe='')}"


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis marking a cut, never half of an &amp; escape."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def block_kit(text: str, card: MessageCard, link: str | None) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if card.title:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": cut(card.title, 150), "emoji": True}})
    if text.strip():
        blocks.append({"type": "section", "text": _mrkdwn(cut(text, 3000))})
    for start in range(0, len(card.fields), FIELDS_PER_SECTION):
        fields = [
            _mrkdwn(cut(f"*{field.label}*\n{field.value or ' '}", 2000))
            for field in card.fields[start : start + FIELDS_PER_SECTION]
        ]
        blocks.append({"type": "section", "fields": fields})
    if card.context:
        blocks.append({"type": "context", "elements": [_mrkdwn(cut(card.context, 3000))]})
    if card.button and link:
        button = {"type": "plain_text", "text": cut(card.button, 75), "emoji": True}
        blocks.append(
            {"type": "actions", "elements": [{"type": "button", "text": button, "url": link, "action_id": "open-call"}]}
        )
    return blocks[:50]


def _mrkdwn(text: str) -> dict[str, Any]:
    """verbatim: Slack keeps the author's markup (*bold*, <url|label>) but does not preprocess plain text,
    which would link a caller's URL or #channel and parse "certain mentions" (Block Kit reference)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def adaptive_card(text: str, card: MessageCard | None, link: str | None) -> dict[str, Any]:
    """The Teams message: one Adaptive Card (version 1.4) as an attachment."""
    card = card or MessageCard()
    body: list[dict[str, Any]] = []
    said: list[dict[str, Any]] = []  # the runs of rendered text, which may be cut to fit
    if card.title:
        body.append(_rich(_said(said, _run(card.title, size="Large", weight="Bolder"))))
    if text.strip():
        body.append(_rich(_said(said, _run(text))))
    for field in card.fields:
        body.append(_rich(_run(f"{field.label}: ", weight="Bolder"), _said(said, _run(field.value))))
    if card.context:
        body.append(_rich(_said(said, _run(card.context, size="Small", isSubtle=True))))
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if card.button and link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": card.button, "url": link}]
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}
    message = {"type": "message", "attachments": [attachment]}
    _fit(message, said, TEAMS_MESSAGE_BYTES)
    return message


def _fit(message: dict[str, Any], runs: list[dict[str, Any]], limit: int) -> None:
    """When `message` is over `limit` bytes of JSON, cut every one of `runs` longer than one length
    (an ellipsis marking the cut), the longest that fits: the longest texts give up the most."""
    if len(orjson.dumps(message)) <= limit:
        return
    texts = [run["text"] for run in runs]

    def cap(chars: int) -> int:
        for run, text in zip(runs, texts, strict=True):
            run["text"] = text if len(text) <= chars else text[: chars - 1] + "…"
        return len(orjson.dumps(message))

    low, high = 1, max(map(len, texts), default=1)  # low: fits or nothing fits (the author's own text)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cap(middle) <= limit else (low, middle - 1)
    cap(low)


def _said(runs: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    runs.append(run)
    return run


def _rich(*inlines: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(inlines)}


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}
