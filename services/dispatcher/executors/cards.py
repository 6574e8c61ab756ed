"""One message, two layouts: Slack Block Kit and a Teams Adaptive Card with the same content — a header,
the text, labelled fields, a context line and a link button to the call's console page.

Slack: the router has already escaped every value (&, <, >), so a caller's `<!channel>` or
`<https://evil|https://good>` is text; cuts never split an escape. Teams: every piece of text goes into
a RichTextBlock's TextRun, which Adaptive Cards never parse as Markdown (a TextBlock or a FactSet would
turn a caller's `[here](https://evil)` into a link).

Slack's limits (Block Kit reference): header 150 characters, section text 3,000, a field 2,000 and ten
fields per section, button text 75, 50 blocks. Longer text is cut with an ellipsis rather than refused
by Slack with invalid_blocks.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from schemas.events import MessageCard

_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
FIELDS_PER_SECTION = 10


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
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, 3000)}})
    for start in range(0, len(card.fields), FIELDS_PER_SECTION):
        fields = [
            {"type": "mrkdwn", "text": cut(f"*{field.label}*\n{field.value or ' '}", 2000)}
            for field in card.fields[start : start + FIELDS_PER_SECTION]
        ]
        blocks.append({"type": "section", "fields": fields})
    if card.context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(card.context, 3000)}]})
    if card.button and link:
        button = {"type": "plain_text", "text": cut(card.button, 75), "emoji": True}
        blocks.append(
            {"type": "actions", "elements": [{"type": "button", "text": button, "url": link, "action_id": "open-call"}]}
        )
    return blocks[:50]


def adaptive_card(text: str, card: MessageCard | None, link: str | None) -> dict[str, Any]:
    """The Teams message: one Adaptive Card (version 1.4) as an attachment."""
    card = card or MessageCard()
    body: list[dict[str, Any]] = []
    if card.title:
        body.append(_rich(_run(card.title, size="Large", weight="Bolder")))
    if text.strip():
        body.append(_rich(_run(text)))
    for field in card.fields:
        body.append(_rich(_run(f"{field.label}: ", weight="Bolder"), _run(field.value)))
    if card.context:
        body.append(_rich(_run(card.context, size="Small", isSubtle=True)))
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if card.button and link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": card.button, "url": link}]
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}
    return {"type": "message", "attachments": [attachment]}


def _rich(*inlines: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": list(inlines)}


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}
