"""`postcall explain <conversation_id>`: why each flow of a conversation fired or not, and what came of it.

Reads postcall.decisions.v1 (the router's DecisionTrace) and postcall.action-results.v1 (the
dispatcher's ActionCompleted, keyed by action_id) from the beginning to their current end, without a
consumer group, and prints every flow, every condition with its expected and actual values and why,
every action planned or skipped, and each planned action's outcome once the dispatcher has reported.
A conversation routed more than once (a re-extraction, a new configuration revision) shows every trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from schemas.events import ActionCompleted, ConditionResult, DecisionTrace, FlowDecision
from schemas.topics import ACTION_RESULTS, DECISIONS
from services.cli.options import Bootstrap, kafka_settings
from services.cli.plain import escape_controls as _s  # every value shown came from Kafka
from services.common.kafka import partitions_of, read_partition
from services.common.settings import KafkaSettings

app = typer.Typer(help="Explain what the router decided for a conversation, and what came of it.")
console = Console(highlight=False)


@dataclass
class Story:
    conversation_id: str
    decisions: list[DecisionTrace] = field(default_factory=list)
    results: dict[str, ActionCompleted] = field(default_factory=dict)  # the latest result per action_id

    def as_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "decisions": [d.model_dump(mode="json") for d in self.decisions],
            "results": {k: v.model_dump(mode="json") for k, v in self.results.items()},
        }


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
    for result in sorted(results, key=lambda r: r.completed_at):
        story.results[result.action_id] = result
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a tree.")] = False,
) -> None:
    """Every flow, condition and action the router decided for a conversation, and each action's outcome."""
    story = asyncio.run(collect(kafka_settings(bootstrap), conversation_id))
    if as_json:
        typer.echo(orjson.dumps(story.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        render(story, console)
    if not story.decisions:
        if not as_json:
            console.print(Text(f"no decision trace for {_s(repr(conversation_id))} on {DECISIONS}"))
        raise typer.Exit(1)


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
            _flow(tree, flow, story.results)
        out.print(tree)


def _flow(tree: Tree, flow: FlowDecision, results: dict[str, ActionCompleted]) -> None:
    mark, style = ("○", "dim") if not flow.enabled else _MARK[flow.fired]
    branch = tree.add(Text.assemble((f"{mark} {_s(flow.flow_id)}", f"bold {style}"), f" — {_s(flow.reason)}"))
    planned = {a.action_id: a for a in flow.actions}
    for result in flow.conditions:
        if result.kind == "action":
            _action(branch, result, planned, results)
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
    branch: Tree, result: ConditionResult, planned: dict[str, Any], results: dict[str, ActionCompleted]
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
        line.append_text(_outcome(results.get(action_id)))
    branch.add(line)


def _outcome(done: ActionCompleted | None) -> Text:
    if done is None:
        return Text("pending (the dispatcher has not reported yet)", style="yellow")
    good = done.outcome in ("delivered", "published", "skipped_duplicate")
    text = Text(_s(done.outcome), style="green" if good else "red")
    details = [f"{done.attempts} attempt(s)"]
    if done.status_code is not None:
        details.insert(0, f"HTTP {done.status_code}")
    if done.latency_ms is not None:
        details.append(f"{done.latency_ms:.0f} ms")
    if done.error:
        details.append(_s(done.error))
    text.append(f" ({', '.join(details)}) at {done.completed_at.isoformat()}")
    return text


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return _s(text if len(text) <= limit else text[: limit - 1] + "…")
