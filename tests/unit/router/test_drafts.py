"""Drafts: a flow or a file marked `draft: true` is validated and can be tried, but never runs on live
traffic; publishing is removing the mark."""

from __future__ import annotations

from pathlib import Path

from schemas.agents import extraction_spec, load_catalog
from schemas.events import DecisionTrace
from schemas.routes import ROUTER
from services.common.api import PermanentError, Service
from services.common.harness import Harness, Outcome
from services.router.catalog import CatalogHolder
from services.router.engine import DRAFT_REASON, CompiledAgent
from services.router.handler import RouterHandler
from tests.unit.router.support import NOW, event, write


async def route(tmp_path: Path, *args: object, **kw: object) -> Outcome:
    """The router over the folder, on the in-memory runtime: one conversation in, what it became out."""
    handler = RouterHandler(CatalogHolder(tmp_path, "(n/a)"), clock=lambda: NOW)
    return await Harness(Service(ROUTER, handler.handle)).send(event(*args, **kw))


PUBLISHED = """
    agent: support-line
    flows:
      - id: crm
        actions: [{type: webhook, destination: crm}]
      - id: callback-draft
        draft: true
        when: {ai: "Did the customer ask to be called back?"}
        actions: [{type: task, title: "Call back {{customer_name}}"}]
"""
DRAFT_FILE = """
    agent: support-line
    draft: true
    flows:
      - id: crm
        actions: [{type: webhook, destination: crm}]
      - id: alert-everyone
        actions: [{type: team_alert, message: "call ended"}]
"""
ASKED = {"Did the customer ask to be called back?": True}


async def test_a_draft_flow_never_fires_on_live_traffic_even_when_its_conditions_pass(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", PUBLISHED)
    events = (await route(tmp_path, triggers=ASKED)).events
    trace = events[0]
    assert isinstance(trace, DecisionTrace)
    draft = trace.flows[1]
    assert (draft.flow_id, draft.fired, draft.enabled, draft.reason) == ("callback-draft", False, False, DRAFT_REASON)
    assert [getattr(e, "type", None) for e in events[1:]] == ["webhook"]


def test_publishing_is_removing_the_mark(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", PUBLISHED.replace("        draft: true\n", ""))
    config = load_catalog(tmp_path).lookup("support-line")
    assert config is not None
    trace, actions = CompiledAgent(config, "(n/a)").route(event(triggers=ASKED), NOW)
    assert [f.fired for f in trace.flows] == [True, True]
    assert [a.type for a in actions] == ["webhook", "task"]  # type: ignore[attr-defined]


def test_a_dry_run_runs_the_draft_flow_as_it_will_run_once_published(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", PUBLISHED)
    catalog = load_catalog(tmp_path)
    tried = catalog.trial().lookup("support-line")
    assert tried is not None and not any(f.draft for f in tried.flows)
    trace, _ = CompiledAgent(tried, "(n/a)").route(event(triggers=ASKED), NOW)
    assert [f.fired for f in trace.flows] == [True, True]
    live = catalog.lookup("support-line")
    assert live is not None and live.flows[1].draft  # the live catalog keeps the mark


def test_a_draft_flows_questions_are_not_asked_on_live_traffic(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", PUBLISHED)
    catalog = load_catalog(tmp_path)
    live, tried = catalog.lookup("support-line"), catalog.trial().lookup("support-line")
    assert live is not None and tried is not None
    assert extraction_spec(live).triggers == []
    assert [t.question for t in extraction_spec(tried).triggers] == list(ASKED)


async def test_a_draft_file_never_serves_live_traffic(tmp_path: Path) -> None:
    write(tmp_path, "support-line.draft.yaml", DRAFT_FILE)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == () and catalog.lookup("support-line") is None and not catalog.is_broken("support-line")
    out = await route(tmp_path)
    assert out.status == "dead_lettered" and isinstance(out.error, PermanentError)
    assert "no configuration for agent 'support-line'" in str(out.error)
    tried = catalog.trial().lookup("support-line")
    assert tried is not None and not tried.draft


async def test_a_draft_file_beside_the_published_one_is_tried_but_live_traffic_uses_the_published(
    tmp_path: Path,
) -> None:
    write(tmp_path, "support-line.yaml", PUBLISHED)
    write(tmp_path, "support-line.draft.yaml", DRAFT_FILE)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == ()
    trace = (await route(tmp_path)).events[0]
    assert [f.flow_id for f in trace.flows] == ["crm", "callback-draft"]  # type: ignore[attr-defined]
    tried = catalog.trial().lookup("support-line")
    assert tried is not None and [f.id for f in tried.flows] == ["crm", "alert-everyone"]


def test_a_draft_is_validated_like_any_file_and_two_drafts_of_one_agent_are_a_problem(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", DRAFT_FILE.replace("team_alert", "team_alrt"))
    write(tmp_path, "b.yaml", DRAFT_FILE)
    write(tmp_path, "c.yaml", DRAFT_FILE)
    problems = [str(p) for p in load_catalog(tmp_path).problems]
    assert any(p.startswith(str(tmp_path / "a.yaml") + ":8:") and "unknown action type" in p for p in problems)
    assert any("draft of agent 'support-line' is already configured in" in p for p in problems)


def test_a_broken_draft_does_not_hold_live_traffic_in_the_retry_tiers(tmp_path: Path) -> None:
    write(tmp_path, "support-line.draft.yaml", DRAFT_FILE.replace("team_alert", "team_alrt"))
    catalog = load_catalog(tmp_path)
    assert catalog.problems and not catalog.is_broken("support-line")
