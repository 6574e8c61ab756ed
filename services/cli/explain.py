"""`postcall explain <conversation_id>`: why each flow of a conversation fired or not, and what came of it.

With a query API configured (--api or POSTCALL_API_URL), the conversation comes from the store: one
request, every attempt of every action, also after the topics' retention. Otherwise (or when the API
does not answer) it reads postcall.decisions.v1 (the router's DecisionTrace) and
postcall.action-results.v1 (the dispatcher's ActionCompleted) from the beginning to their current end,
without a consumer group. Either way it prints every flow, every condition with its expected and actual
values and why, every action planned or skipped, each action's outcome and every attempt.
A conversation routed more than once (a re-extraction, a new configuration revision) shows every trace.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from schemas.events import ActionCompleted, ConditionResult, DecisionTrace, FlowDecision
from schemas.topics import ACTION_RESULTS, DECISIONS
from services.cli.apiclient import Api, ApiClient, ApiRefused, ApiUnreachable, Token
from services.cli.dlq import Filters, select
from services.cli.options import Bootstrap, kafka_settings
from services.cli.plain import escape_controls as _s  # every value shown came from Kafka
from services.common.kafka import partitions_of, read_partition
from services.common.settings import KafkaSettings
from services.store.rows import final_outcome
from services.store.views import ConversationDetail

app = typer.Typer(help="Explain what the router decided for a conversation, and what came of it.")
console = Console(highlight=False)


@dataclass(frozen=True)
class Attempt:
    """One attempt of an action, from the action-results topic or from the store."""

    attempt: int
    outcome: str
    at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_excerpt: str | None = None
    next_retry_at: datetime | None = None
    result_id: str | None = None  # the id the receiver named ("case 4471")

    @classmethod
    def of(cls, r: ActionCompleted) -> Attempt:
        excerpt = r.response_excerpt
        return cls(
            r.attempts, r.outcome, r.completed_at, r.status_code, r.latency_ms, r.error, excerpt, result_id=r.result_id
        )

    def as_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in vars(self).items()}


@dataclass(frozen=True)
class Letter:
    """A dead letter of the conversation, as explain names it."""

    service: str
    reason: str
    coordinates: str


@dataclass
class Story:
    conversation_id: str
    decisions: list[DecisionTrace] = field(default_factory=list)
    results: dict[str, ActionCompleted] = field(default_factory=dict)  # each action's outcome (done wins)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)  # every attempt per action_id
    source: str = "topics"
    stored: bool = True  # False: the store has no such conversation (only with source "store")
    dead_letters: list[Letter] = field(default_factory=list)  # not replayed yet (when no trace was found)

    def as_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "source": self.source,
            "decisions": [d.model_dump(mode="json") for d in self.decisions],
            "results": {k: v.model_dump(mode="json") for k, v in self.results.items()},
            "attempts": {k: [a.as_json() for a in v] for k, v in self.attempts.items()},
        }

    def add_results(self, results: list[ActionCompleted]) -> None:
        """Every result of each action; its outcome is the store's: done beats a later failure."""
        by_action: dict[str, list[ActionCompleted]] = {}
        for result in sorted(results, key=lambda r: (r.completed_at, r.attempts)):
            by_action.setdefault(result.action_id, []).append(result)
        for action_id, all_of_it in by_action.items():
            final = final_outcome([(r.attempts, r.outcome) for r in all_of_it])
            self.results[action_id] = [r for r in all_of_it if r.outcome == final][-1]
            self.attempts[action_id] = [Attempt.of(r) for r in all_of_it]


def story_from_store(detail: ConversationDetail) -> Story:
    story = Story(detail.conversation_id, list(detail.decisions), source="store")
    story.dead_letters = [
        Letter(letter.service, letter.reason, letter.coordinates)
        for letter in detail.dead_letters
        if letter.replayed_at is None
    ]
    for action in detail.actions:
        if not action.attempts:
            continue
        story.attempts[action.action_id] = [
            Attempt(a.attempt, a.outcome, a.at, a.status_code, a.latency_ms, a.error, a.response_excerpt,
                    a.next_retry_at, a.result_id)
            for a in action.attempts
        ]  # fmt: skip
        final = [a for a in action.attempts if a.outcome == action.final_outcome] or action.attempts
        last = final[-1]
        story.results[action.action_id] = ActionCompleted(
            action_id=action.action_id,
            conversation_id=detail.conversation_id,
            type=action.type,
            destination=last.destination or action.destination,
            outcome=last.outcome,
            attempts=max(a.attempt for a in action.attempts),
            status_code=last.status_code,
            latency_ms=last.latency_ms,
            error=last.error,
            completed_at=last.at,
        )
    return story


async def collect(
    kafka: KafkaSettings, conversation_id: str, decisions: str = DECISIONS, action_results: str = ACTION_RESULTS
) -> Story:
    story = Story(conversation_id)
    needle = orjson.dumps(conversation_id)[1:-1]  # as it appears inside the JSON (control characters escaped)
    async for value in _values(kafka, decisions, needle):
        trace = _parse(DecisionTrace, value)
        if trace is not None and trace.conversation_id == conversation_id:
            story.decisions.append(trace)
    results: list[ActionCompleted] = []
    async for value in _values(kafka, action_results, needle):
        result = _parse(ActionCompleted, value)
        if result is not None and result.conversation_id == conversation_id:
            results.append(result)
    story.add_results(results)
    story.decisions.sort(key=lambda d: d.decided_at)
    return story


async def _values(kafka: KafkaSettings, topic: str, needle: bytes) -> AsyncIterator[bytes]:
    for partition in await partitions_of(kafka, topic):
        async for record in read_partition(kafka, topic, partition):
            if record.value is not None and needle in record.value:  # cheap filter before parsing
                yield record.value


M = TypeVar("M", DecisionTrace, ActionCompleted)


def _parse(model: type[M], value: bytes) -> M | None:
    try:
        return model.model_validate_json(value)
    except ValidationError:
        return None  # a record of another shape on the topic is not ours to explain


def explain(
    conversation_id: Annotated[str, typer.Argument(help="The conversation to explain.")],
    bootstrap: Bootstrap = None,
    api: Api = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a tree.")] = False,
) -> None:
    """Every flow, condition and action the router decided for a conversation, and every attempt of each
    action: from the store when a query API is configured, else from the topics."""
    story = _from_store(ApiClient.configured(api, token), conversation_id)
    if story is None:
        kafka = kafka_settings(bootstrap)
        story = asyncio.run(collect(kafka, conversation_id))
        if not story.decisions and not as_json:
            story.dead_letters = asyncio.run(_dead_letters(kafka, conversation_id))
    if as_json:
        typer.echo(orjson.dumps(story.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        render(story, console)
    if not story.decisions:
        if not as_json:
            _no_decision(story, console)
        raise typer.Exit(1)


async def _dead_letters(kafka: KafkaSettings, conversation_id: str) -> list[Letter]:
    """The extractor's and the router's dead letters of the conversation not replayed yet: what stopped it
    before a decision trace (read only when there is none)."""
    letters = await select(kafka, Filters(services=("extractor", "router"), key=conversation_id))
    return [Letter(d.service, d.reason, d.coordinates) for d in letters]


def _no_decision(story: Story, out: Console) -> None:
    """Why there is nothing to explain, as far as the store knows: no such call, or a dead letter that
    stopped it before the router (an unknown agent, an invalid event), with the command that replays it."""
    where = "in the store" if story.source == "store" else f"on {DECISIONS}"
    absent = "" if story.stored else " (no conversation with that id there)"
    out.print(Text(f"no decision trace for {_s(repr(story.conversation_id))} {where}{absent}"))
    for letter in story.dead_letters:
        out.print(Text(f"dead-lettered by the {_s(letter.service)}: {_s(letter.reason)} ({_s(letter.coordinates)})"))
    if story.dead_letters:
        key = shlex.quote(story.conversation_id)
        out.print(Text(f"fix the cause, then: postcall dlq replay --key {_s(key)} --dry-run (and again without it)"))


def _from_store(client: ApiClient | None, conversation_id: str) -> Story | None:
    """The story from the query API; None (read the topics) when none is configured or it does not answer."""
    if client is None:
        return None
    try:
        found = client.get(f"/conversations/{quote(conversation_id, safe='')}")
    except ApiUnreachable as exc:
        typer.echo(f"postcall explain: {exc}; reading the topics instead", err=True)
        return None
    except ApiRefused as exc:
        if exc.status == 404:
            return Story(conversation_id, source="store", stored=False)
        typer.echo(f"postcall explain: the query API at {client.shown} refused: {_s(str(exc))}", err=True)
        raise typer.Exit(2) from None
    return story_from_store(ConversationDetail.model_validate(found))


app.command("explain")(explain)


# ── Rendering ─────────────────────────────────────────────────────────────────────────────────────

_MARK = {True: ("✔", "green"), False: ("✘", "red")}


def render(story: Story, out: Console) -> None:
    for trace in story.decisions:
        version = f" (version {trace.agent_version})" if trace.agent_version else ""
        head = Text(f"conversation {_s(trace.conversation_id)}", style="bold")
        head.append(f" · agent {_s(trace.agent_id)}" + _s(version))
        head.append(f" · revision {_s(trace.config_revision)} · extraction {_s(trace.extraction_status)}")
        head.append(f" · decided {trace.decided_at.isoformat()}", style="dim")
        tree = Tree(head)
        for flow in trace.flows:
            _flow(tree, flow, story)
        out.print(tree)


def _flow(tree: Tree, flow: FlowDecision, story: Story) -> None:
    mark, style = ("○", "dim") if not flow.enabled else _MARK[flow.fired]
    branch = tree.add(Text.assemble((f"{mark} {_s(flow.flow_id)}", f"bold {style}"), f" — {_s(flow.reason)}"))
    planned = {a.action_id: a for a in flow.actions}
    for result in flow.conditions:
        if result.kind == "action":
            _action(branch, result, planned, story.results, story.attempts)
        else:
            _condition(branch, result)


def _condition(branch: Tree, result: ConditionResult) -> None:
    mark, style = _MARK[result.passed]
    line = Text.assemble(
        (f"{mark} {_s(result.path)}", style),
        f"  {_s(result.kind)}",
        ("  expected ", "dim"),
        _short(result.expected),
        ("  actual ", "dim"),
        _short(result.actual),
    )
    line.append(f" — {_s(result.reason)}")
    branch.add(line)


def _action(
    branch: Tree,
    result: ConditionResult,
    planned: dict[str, Any],
    results: dict[str, ActionCompleted],
    attempts: dict[str, list[Attempt]],
) -> None:
    action_id = str(result.actual) if result.actual else None
    mark, style = _MARK[result.passed]
    line = Text.assemble((f"{mark} {_s(result.path)}", style), f"  {_short(result.expected)}")
    plan = planned.get(action_id) if action_id else None
    if plan is not None and plan.destination:
        line.append(f" → {_s(plan.destination)}")
    line.append(f" — {_s(result.reason)}")
    if action_id is not None:
        line.append(f"\n  action {_s(action_id)}: ", style="dim")
        done = results.get(action_id)
        line.append_text(_outcome(done))
        reply = _reply(done.type if done is not None else getattr(plan, "type", None))
        for attempt in attempts.get(action_id, []) if len(attempts.get(action_id, [])) > 1 else []:
            line.append("\n    ").append_text(_attempt(attempt, reply))
    branch.add(line)


def _reply(action_type: str | None) -> str:
    """What a status code is: an email's is the SMTP server's reply (250), every other action's HTTP's."""
    return "SMTP" if action_type == "email" else "HTTP"


def _attempt(a: Attempt, reply: str) -> Text:
    """`attempt 1: failed HTTP 503 in 12 ms at ... — error; next retry at ...`"""
    good = a.outcome in ("delivered", "published", "skipped_duplicate")
    text = Text(f"attempt {a.attempt}: ", style="dim")
    text.append(_s(a.outcome), style="green" if good else "red")
    if a.status_code is not None:
        text.append(f" {reply} {a.status_code}")
    if a.result_id:
        text.append(f" id {_short(a.result_id)}")
    if a.latency_ms is not None:
        text.append(f" in {a.latency_ms:.0f} ms")
    text.append(f" at {a.at.isoformat()}", style="dim")
    if a.error:
        text.append(f" — {_short(a.error, 160)}")
    if a.response_excerpt:
        text.append(f" — response: {_short(a.response_excerpt, 120)}")
    if a.next_retry_at is not None:
        text.append(f"; next retry at {a.next_retry_at.isoformat()}", style="yellow")
    return text


def _outcome(done: ActionCompleted | None) -> Text:
    if done is None:
        return Text("pending (the dispatcher has not reported yet)", style="yellow")
    good = done.outcome in ("delivered", "published", "skipped_duplicate")
    text = Text(_s(done.outcome), style="green" if good else "red")
    details = [f"{done.attempts} attempt(s)"]
    if done.status_code is not None:
        details.insert(0, f"{_reply(done.type)} {done.status_code}")
    if done.result_id:
        details.insert(1 if done.status_code is not None else 0, f"id {_short(done.result_id)}")
    if done.latency_ms is not None:
        details.append(f"{done.latency_ms:.0f} ms")
    if done.error:
        details.append(_s(done.error))
    text.append(f" ({', '.join(details)}) at {done.completed_at.isoformat()}")
    return text


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return _s(text if len(text) <= limit else text[: limit - 1] + "…")
