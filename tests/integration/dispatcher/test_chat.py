"""Slack and Teams messages people want to read, against real local servers: Block Kit through a bot
token's chat.postMessage and through an incoming webhook, an Adaptive Card through a Teams webhook,
each with the header, the fields, the context line and a link button to the call's console page, and a
caller's text arriving as text (never a mention, a disguised link or Markdown). Slack's 429 Retry-After
is honoured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.events import RESULT_ID_CHARS, ActionCompleted, SlackRequested, TeamsRequested
from services.common.errors import PermanentError, RetryableError
from tests.integration.dispatcher.conftest import Stack
from tests.support.apis import Chat, serve
from tests.support.calls import ended, extracted
from tests.support.flows import route

HOSTILE = "<!channel> see <https://evil.example|https://bank.example> & [click](https://evil.example) **now**"
CONSOLE = "https://postcall.example.com"
CARD = """
        title: "Callback for {{dynamic_variables.name}}"
        fields:
          Customer: "{{dynamic_variables.name}}"
          Phone: "{{customer_number}}"
          Said: "{{dynamic_variables.said}}"
        context: "{{agent_name}} · {{conversation_date}}"
        button: Open the call
"""
AGENT = f"""
agent: support-line
flows:
  - id: notify
    actions:
      - type: slack
        destination: support-bot
        channel: C024BE91L
        text: "<!here> New callback request: {{{{dynamic_variables.said}}}}"{CARD}
      - type: slack
        destination: support-hook
        text: "New callback request: {{{{dynamic_variables.said}}}}"{CARD}
      - type: teams
        destination: support-teams
        text: "New callback request: {{{{dynamic_variables.said}}}}"{CARD}
"""


def destinations(base: str) -> str:
    return f"""
destinations:
  - name: support-bot
    kind: slack
    url: {base}/api
    bot_token: {{secret_env: SLACK_BOT_TOKEN}}
    allow_private: true
  - name: support-hook
    kind: slack
    url_secret: {{secret_env: SLACK_WEBHOOK_URL}}
    allow_private: true
  - name: support-teams
    kind: teams
    url_secret: {{secret_env: TEAMS_WEBHOOK_URL}}
    allow_private: true
"""


@pytest.fixture
async def chat() -> AsyncIterator[tuple[Chat, str, dict[str, str]]]:
    api = Chat()
    async with serve(api.app()) as base:
        env = {
            "SLACK_BOT_TOKEN": api.bot_token,
            "SLACK_WEBHOOK_URL": f"{base}/services/T1/B1/x",
            "TEAMS_WEBHOOK_URL": f"{base}/webhookb2/teams",
        }
        yield api, base, env


def actions(tmp_path: Path) -> tuple[SlackRequested, SlackRequested, TeamsRequested]:
    event = extracted(ended("conv/42", dynamic_variables={"name": "Ann <b>", "said": HOSTILE}))
    bot, hook, teams = route(tmp_path, AGENT, event)[1]
    assert isinstance(bot, SlackRequested) and isinstance(hook, SlackRequested) and isinstance(teams, TeamsRequested)
    return bot, hook, teams


def texts(node: Any) -> list[str]:
    """Every string in a JSON tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [t for v in node.values() for t in texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in texts(v)]
    return []


def assert_no_live_markup(message: Any) -> None:
    for text in texts(message):
        assert "<!channel>" not in text and "<https://evil" not in text and "<b>" not in text, text


async def test_block_kit_through_chat_post_message_with_escaped_caller_text_and_a_console_button(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    api, base, env = chat
    bot, _, _ = actions(tmp_path)
    async with stack(destinations(base), env, console_base_url=CONSOLE) as (executors, _):
        delivery = await executors.run(bot)
    assert (delivery.outcome, delivery.result_id) == ("delivered", "1712345678.000100")
    [request] = api.requests
    assert request.headers["authorization"] == f"Bearer {api.bot_token}"
    message = request.json()
    assert message["channel"] == "C024BE91L" and message["unfurl_links"] is False
    header, section, fields, context, buttons = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Callback for Ann &lt;b&gt;", "emoji": True},
    }
    escaped = HOSTILE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert section["text"]["text"] == f"<!here> New callback request: {escaped}"  # the author's <!here> stays
    assert [f["text"] for f in fields["fields"]] == [
        "*Customer*\nAnn &lt;b&gt;", "*Phone*\n+16305550123", f"*Said*\n{escaped}",
    ]  # fmt: skip
    assert context["elements"][0]["text"].startswith("Support Line · 2026-03-10")
    [button] = buttons["elements"]
    assert (button["text"]["text"], button["url"]) == ("Open the call", f"{CONSOLE}/console/conversations/conv%2F42")
    assert_no_live_markup({k: v for k, v in message.items() if k != "text"} | {"text": message["text"][8:]})


async def test_an_incoming_webhook_gets_the_same_blocks_and_its_429_retry_after_is_honoured(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    api, base, env = chat
    api.busy, api.retry_after = 1, "7"
    _, hook, _ = actions(tmp_path)
    async with stack(destinations(base), env, console_base_url=CONSOLE) as (executors, _):
        with pytest.raises(RetryableError) as caught:
            await executors.run(hook)
        assert caught.value.retry_after == 7.0
        assert "services/T1/B1" not in str(caught.value)  # the webhook URL is the secret
        delivery = await executors.run(hook)
    assert delivery.outcome == "delivered"
    first, second = (r.json() for r in api.requests)
    assert first == second and [b["type"] for b in second["blocks"]] == [
        "header",
        "section",
        "section",
        "context",
        "actions",
    ]
    assert_no_live_markup(second)


async def test_without_a_console_url_there_is_no_button(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    api, base, env = chat
    _, hook, teams = actions(tmp_path)
    async with stack(destinations(base), env) as (executors, _):
        await executors.run(hook)
        await executors.run(teams)
    slack_message, teams_message = (r.json() for r in api.requests)
    assert "actions" not in [b["type"] for b in slack_message["blocks"]]
    assert "actions" not in teams_message["attachments"][0]["content"]


@pytest.mark.parametrize(("error", "kind"), [("channel_not_found", PermanentError), ("ratelimited", RetryableError)])
async def test_a_web_api_error_in_a_200_answer_is_a_failure_by_its_code(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path, error: str, kind: type
) -> None:
    api, base, env = chat
    api.slack_error = error
    bot, _, _ = actions(tmp_path)
    async with stack(destinations(base), env) as (executors, _):
        with pytest.raises(kind, match=f"Slack refused the message: {error}") as caught:
            await executors.run(bot)
    assert api.bot_token not in str(caught.value)


@pytest.mark.parametrize("word", ["said ", "dit «oui» — "])
async def test_a_long_message_through_chat_post_message_is_delivered_though_slack_echoes_it_back(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path, word: str
) -> None:
    # Slack's ok:true answer carries the posted message: more than the 2 KiB read of other answers
    api, base, env = chat
    event = extracted(ended("conv/42", dynamic_variables={"name": "Ann", "said": word * 300}))
    bot = route(tmp_path, AGENT, event)[1][0]
    assert isinstance(bot, SlackRequested)
    async with stack(destinations(base), env, console_base_url=CONSOLE) as (executors, _):
        delivery = await executors.run(bot)
    assert (delivery.outcome, delivery.result_id) == ("delivered", "1712345678.000100")
    assert len(api.requests) == 1


async def test_a_teams_card_carries_caller_text_only_where_markdown_is_never_parsed(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    api, base, env = chat
    _, _, teams = actions(tmp_path)
    async with stack(destinations(base), env, console_base_url=CONSOLE) as (executors, _):
        delivery = await executors.run(teams)
    assert (delivery.outcome, delivery.status_code) == ("delivered", 202)
    [request] = api.requests
    message = request.json()
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    # caller text sits in TextRuns of RichTextBlocks only: no TextBlock, FactSet or other Markdown element
    assert {block["type"] for block in card["body"]} == {"RichTextBlock"}
    runs = [run for block in card["body"] for run in block["inlines"]]
    assert {run["type"] for run in runs} == {"TextRun"}
    assert runs[0] == {"type": "TextRun", "text": "Callback for Ann <b>", "size": "Large", "weight": "Bolder"}
    assert runs[1]["text"] == f"New callback request: {HOSTILE}"  # as said, shown as text
    assert [(runs[i]["text"], runs[i + 1]["text"]) for i in (2, 4, 6)] == [
        ("Customer: ", "Ann <b>"), ("Phone: ", "+16305550123"), ("Said: ", HOSTILE),
    ]  # fmt: skip
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the call", "url": f"{CONSOLE}/console/conversations/conv%2F42"}
    ]
    assert orjson.loads(request.body) == message


@pytest.mark.parametrize("word", ["said ", "dit «oui» — ", 'a "quote"\n'])
async def test_a_teams_card_with_a_long_caller_text_is_cut_to_fit_teams_28_kb_not_refused(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path, word: str
) -> None:
    # a transcript or a long summary in the text and a field: Teams refuses a message over 28 KB, forever
    api, base, env = chat
    long = word * 12_000
    event = extracted(ended("conv/42", dynamic_variables={"name": "Ann", "said": long}))
    teams = route(tmp_path, AGENT, event)[1][2]
    assert isinstance(teams, TeamsRequested)
    async with stack(destinations(base), env, console_base_url=CONSOLE) as (executors, _):
        delivery = await executors.run(teams)
    assert (delivery.outcome, delivery.status_code) == ("delivered", 202)
    [request] = api.requests
    assert len(request.body) <= 28 * 1024
    runs = [run["text"] for block in request.json()["attachments"][0]["content"]["body"] for run in block["inlines"]]
    assert runs[:2] == ["Callback for Ann", runs[1]] and runs[2:6] == ["Customer: ", "Ann", "Phone: ", "+16305550123"]
    text, said = runs[1], runs[7]
    assert text.startswith("New callback request: " + word * 100) and text.endswith("…")
    assert said.startswith(word * 100) and said.endswith("…")  # the longest texts are cut, the rest kept
    assert runs[6] == "Said: " and runs[-1].startswith("Support Line · 2026-03-10")


async def test_a_long_ts_in_slacks_answer_is_cut_to_what_action_completed_carries(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    # the message is posted: an id longer than the contract's result_id must not fail the delivery's record
    # (ActionCompleted would not validate, and the retry would post the message again: Slack has no idempotency)
    api, base, env = chat
    api.ts = "1712345678." + "0" * 400
    bot, _, _ = actions(tmp_path)
    async with stack(destinations(base), env) as (executors, _):
        delivery = await executors.run(bot)
    assert delivery.outcome == "delivered" and delivery.result_id == api.ts[:RESULT_ID_CHARS]
    ActionCompleted.model_validate(
        {"action_id": "a", "conversation_id": "conv/42", "type": "slack", "outcome": "delivered", "attempts": 1}
        | {"result_id": delivery.result_id, "completed_at": "2026-12-06T13:00:00Z"}
    )


async def test_a_teams_connector_that_answers_200_to_a_message_it_did_not_post_is_not_delivered(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    """A legacy Office 365 connector answers 200 whatever became of the message: "1" when it was posted,
    "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 ..." when
    Teams throttled or refused it (Microsoft: a response is a success only when it is a number). The
    dispatcher recorded such a message as delivered: lost, never retried."""
    api, base, env = chat
    api.connector, api.busy = True, 1
    _, _, teams = actions(tmp_path)
    async with stack(destinations(base), env) as (executors, _):
        with pytest.raises(RetryableError, match="HTTP error 429"):
            await executors.run(teams)
        assert (await executors.run(teams)).outcome == "delivered"  # "1": posted
        api.teams_error = 400
        with pytest.raises(PermanentError, match="HTTP error 400"):
            await executors.run(teams)
    assert len(api.requests) == 3


async def test_a_teams_connectors_200_reporting_a_failure_without_a_status_is_retried(
    chat: tuple[Chat, str, dict[str, str]], stack: Stack, tmp_path: Path
) -> None:
    """A connector's 200 with "Webhook message delivery failed with error: Error contacting Microsoft Teams
    endpoint" (no HTTP error in it, MicrosoftDocs/msteams-docs#1736) was counted delivered: only a text
    naming a status was read as a failure. Microsoft: a connector answers 200 to what it thinks retryable,
    and only a number is a success (msteams-docs#9064, #9698)."""
    api, base, env = chat
    api.connector, api.connector_failure = True, "Error contacting Microsoft Teams endpoint"
    _, _, teams = actions(tmp_path)
    async with stack(destinations(base), env) as (executors, _):
        with pytest.raises(RetryableError, match="Error contacting Microsoft Teams endpoint"):
            await executors.run(teams)
        api.connector_failure = None
        assert (await executors.run(teams)).outcome == "delivered"  # "1": posted
    assert len(api.requests) == 2
