"""`postcall try --conversation FILE --agents DIR`: a dry run of extraction and routing, for an author
trying a (draft) flow and for CI pipelines of agent configurations.

Prints what the extractor found (every field with its value, confidence, review flag and evidence), every
flow with each condition's expected and actual value and why it passed or failed, and the exact record
of every action that would be sent (topic, key, JSON value). Nothing is produced, nothing is sent; no
broker, no server.

Exit code 0 when the run worked and every `--expect FLOW` fired and no `--expect-not FLOW` did; 1 when
the input or the agent's configuration is bad, extraction could not finish, or an expectation failed;
2 when the command line is wrong (a file that cannot be read, a folder that does not exist, an unknown provider).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from schemas.events import ConditionResult, ExtractedValue, Extraction, FlowDecision
from services.cli.dryrun import PlannedRecord, Provider, TrialResult, dry_run
from services.cli.options import contract_id
from services.cli.plain import escape_controls as _s  # a call's text, and what was extracted from it

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)  # CI logs: not cut at 80
_MARK = {True: ("✔", "green"), False: ("✘", "red")}


def try_(
    conversation: Annotated[
        Path,
        typer.Option(
            "--conversation",
            "-c",
            help="A ConversationEnded (extracted here), a ConversationExtracted (routed as is) or a vendor "
            "payload, as JSON; '-' reads standard input.",
        ),
    ],
    agents: Annotated[Path, typer.Option("--agents", "-a", help="Folder of agent configuration files.")],
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider", help="heuristic or openai (default: the agent's, else openai when POSTCALL_LLM__* is set)."
        ),
    ] = None,
    expect: Annotated[list[str] | None, typer.Option("--expect", help="A flow that must fire (repeatable).")] = None,
    expect_not: Annotated[
        list[str] | None, typer.Option("--expect-not", help="A flow that must not fire (repeatable).")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="The postcall agent id the call is for (a vendor payload names the vendor's).",
            callback=contract_id,
        ),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Account id for a vendor payload.", callback=contract_id)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Dry run: which flows would fire for a conversation, why, and the exact payloads. Nothing is sent."""
    if provider not in (None, "heuristic", "openai"):
        raise typer.BadParameter(f"unknown provider {provider!r}; choose heuristic or openai", param_hint="--provider")
    if not agents.is_dir():
        raise typer.BadParameter(f"{agents} is not a folder", param_hint="--agents")
    data = _read(conversation)
    chosen: Provider | None = provider  # type: ignore[assignment]
    result = asyncio.run(dry_run(data, agents, provider=chosen, agent=agent, account=account))
    failures = expectation_failures(result, expect or [], expect_not or [])
    if as_json:
        typer.echo(orjson.dumps({**result.as_json(), "expectations_failed": failures}, option=orjson.OPT_INDENT_2))
    else:
        render(result, console)
        for line in failures:
            console.print(Text(f"✘ {line}", style="bold red"))
    if not result.ok or failures:
        raise typer.Exit(1)


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--conversation") from None


def expectation_failures(result: TrialResult, expect: list[str], expect_not: list[str]) -> list[str]:
    if result.trace is None:
        return []  # the run itself failed, which already exits 1
    known = {f.flow_id for f in result.trace.flows}
    fired = set(result.fired())
    out = [
        f"expected flow {f!r} does not exist in {result.config_source}"
        for f in [*expect, *expect_not]
        if f not in known
    ]
    out += [f"expected flow {f!r} to fire; it did not" for f in expect if f in known and f not in fired]
    out += [f"expected flow {f!r} not to fire; it did" for f in expect_not if f in fired]
    return out


# ── Rendering ─────────────────────────────────────────────────────────────────────────────────────


def render(result: TrialResult, out: Console) -> None:
    if result.conversation is not None:
        agent = result.conversation.agent
        head = Text(f"conversation {_s(result.conversation.conversation_id)}", style="bold")
        head.append(f" · agent {_s(agent.id)}" + (f" (version {_s(agent.version)})" if agent.version else ""))
        head.append(f" · input {result.input_kind}")
        out.print(head)
    for problem in result.problems:
        out.print(Text(_s(str(problem)), style="red"))
    if result.config_source:
        out.print(f"configuration {result.config_source} · revision {result.config_revision} (drafts run as published)")
    if result.extraction is not None:
        out.print(extraction_tree(result.extraction))
    if result.trace is not None:
        tree = Tree(Text("flows", style="bold"))
        planned = {p.action.action_id: p for p in result.actions}
        for flow in result.trace.flows:
            _flow(tree, flow, planned)
        out.print(tree)
        n = len(result.trace.flows)
        fired = result.fired()
        out.print(
            Text(
                f"fired: {', '.join(fired) or 'none'} ({len(fired)} of {n} flows) · {len(result.actions)} action(s) "
                "would be sent · dry run: nothing was produced or sent",
                style="bold",
            )
        )
    if result.error:
        # one line per problem (an invalid event names each field on its own line): escaped line by line
        out.print(Text("✘ " + "\n".join(_s(line) for line in result.error.split("\n")), style="bold red"))


def extraction_tree(extraction: Extraction) -> Tree:
    head = Text(f"extraction {extraction.status}", style="bold " + ("green" if extraction.status == "ok" else "red"))
    head.append(f" · {_s(extraction.provider)}" + (f" {_s(extraction.model)}" if extraction.model else ""))
    if extraction.latency_ms is not None:
        head.append(f" · {extraction.latency_ms:.0f} ms", style="dim")
    if extraction.reason:
        head.append(f" · {_s(extraction.reason)}")
    tree = Tree(head)
    for name, value in {**extraction.fields, **extraction.dynamic}.items():
        _value(tree, name, value)
    for answer in extraction.triggers.values():
        line = Text(f"ai: {_s(answer.question)} → ", style="")
        line.append("yes" if answer.answer else "no", style="green" if answer.answer else "dim")
        if answer.confidence is not None:
            line.append(f"  confidence {answer.confidence:.2f}", style="dim")
        if answer.evidence:
            line.append(f'\n  evidence: "{_s(answer.evidence)}"', style="dim")
        tree.add(line)
    for route, chosen in extraction.recipients.items():
        tree.add(Text(_s(f"recipients {route}: {', '.join(chosen) or '(fallback)'}")))
    if extraction.summary:
        tree.add(Text(f"summary: {_s(extraction.summary)}"))
    return tree


def _value(tree: Tree, name: str, value: ExtractedValue) -> None:
    line = Text(f"{_s(name)} = ")
    line.append(_short(value.value), style="bold" if value.value is not None else "dim")
    if value.confidence is not None:
        line.append(f"  confidence {value.confidence:.2f}", style="dim")
    if value.needs_review:
        line.append("  needs review", style="yellow")
    if value.evidence:
        line.append(f'\n  evidence: "{_s(value.evidence)}"', style="dim")
    tree.add(line)


def _flow(tree: Tree, flow: FlowDecision, planned: dict[str, PlannedRecord]) -> None:
    mark, style = ("○", "dim") if not flow.enabled else _MARK[flow.fired]
    branch = tree.add(Text.assemble((f"{mark} {_s(flow.flow_id)}", f"bold {style}"), f" — {_s(flow.reason)}"))
    for result in flow.conditions:
        if result.kind == "action":
            _action(branch, result, planned)
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


def _action(branch: Tree, result: ConditionResult, planned: dict[str, PlannedRecord]) -> None:
    mark, style = _MARK[result.passed]
    line = Text.assemble(
        (f"{mark} {_s(result.path)}", style), f"  {_s(str(result.expected))}", f" — {_s(result.reason)}"
    )
    record = planned.get(str(result.actual)) if result.actual else None
    if record is not None:
        line.append(f"\n  would produce to {_s(record.topic)} (key {_s(record.key)}):\n", style="dim")
        value = orjson.dumps(record.action.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode()
        line.append("  " + "\n  ".join(_s(part) for part in value.split("\n")))  # JSON: bidi characters raw
    branch.add(line)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return _s(text if len(text) <= limit else text[: limit - 1] + "…")
