"""Agents: every configuration file with its problems (file:line), each agent's flows with how often each
fired in the last 7 days, and the dispatcher's destinations with what their last week of attempts says.

The folder is the one the services read (`console.config_dir`), loaded as `config validate` loads it; the
destinations file (`console.destinations_file`) is checked as `config validate --destinations` checks it,
without its secrets and, as this process does not know the dispatcher's settings, without its attempt bound
(a timeout over it: the dispatcher refuses it at its start, and `config validate` names it).
Fire counts come from the stored decision traces of the last 7 days (the newest 20,000 per agent; the
page says when it stopped there), counted in SQL from the per-flow rows the recorder writes beside each
trace (decision_flows). Destination *state* (enabled, disabled after a 410, breaker open) is
the dispatcher group's, followed from its topic (services/console/destinations.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.agent_loader import Catalog, ConfigError, LoadedFile, Problem, load_catalog
from schemas.config_yaml import YamlProblem
from services.cli.config import destination_kinds, destination_problems, empty_folder_problems
from services.console.access import PATH, Viewer
from services.console.render import page
from services.dispatcher import destinations as destinations_file
from services.store.db import Store
from services.store.models import Attempt, Decision, DecisionFlow, table
from services.store.rows import DEFERRED

router = APIRouter(prefix=PATH, include_in_schema=False)
WINDOW = timedelta(days=7)
MAX_TRACES = 20_000


@dataclass
class FlowRow:
    id: str
    state: str  # live, draft, disabled
    description: str
    actions: list[str]
    evaluated: int = 0
    fired: int = 0


@dataclass
class FileRow:
    path: str
    loaded: LoadedFile
    flows: list[FlowRow] = field(default_factory=list)
    traces: int = 0
    capped: bool = False


def relative(path: str, root: Path) -> str:
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return path
    return str(rel) if rel.parts else path  # a problem of the folder itself names the folder


def load(config_dir: Path, previous: Catalog | None = None) -> tuple[Catalog | None, list[Problem]]:
    """The folder as the services hold it: with `previous` (this process's last read of the same folder), a
    file an edit broke keeps its last good configuration, shown as served (`stale`), as the router's and the
    extractor's reloads keep it. A file already bad when this process first read the folder shows broken, with
    its problems and no revision, although a service running since it was good still serves that."""
    try:
        catalog = load_catalog(config_dir, previous=previous)
    except ConfigError as exc:
        return None, list(exc.problems)
    return catalog, list(catalog.problems) + empty_folder_problems(catalog)


@router.get("/agents")
async def agents(request: Request, who: Viewer) -> Response:
    settings = request.app.state.settings.console
    store: Store = request.app.state.store
    if settings.config_dir is None:
        return page(request, "agents.html", {"configured": False})
    root = Path(settings.config_dir)
    previous: Catalog | None = getattr(request.app.state, "agents_catalog", None)
    catalog, problems = load(root, previous if previous is not None and previous.directory == str(root) else None)
    if catalog is not None:
        request.app.state.agents_catalog = catalog
    files = [_file_row(f, root) for f in catalog.files.values()] if catalog else []
    destinations, attempts = {}, {}
    if settings.destinations_file is not None:
        try:
            destinations = destination_kinds(Path(settings.destinations_file))
        except (OSError, YamlProblem) as exc:
            problems.append(
                Problem(str(settings.destinations_file), 0, "", f"cannot read the destinations file: {exc}")
            )
        if catalog is not None and destinations:
            problems += list(destination_problems(catalog, destinations))
        if destinations:  # its own blocks (kinds, auth, headers), as `config validate --destinations` checks them
            problems += list(destinations_file.check(Path(settings.destinations_file)))
    since = datetime.now(UTC) - WINDOW
    async with store.read() as conn:
        for row in files:
            await _count_fires(conn, row, since)
        attempts = await _attempts(conn, since)
    context = {
        "configured": True,
        "root": str(root),
        "files": files,
        "problems": [(relative(p.file, root), p) for p in problems],
        "destinations": destinations,
        "attempts": attempts,
        "max_traces": MAX_TRACES,
        "states": getattr(request.app.state, "destination_states", None),
        "state_error": getattr(getattr(request.app.state, "destination_states", None), "error", None),
    }
    return page(request, "agents.html", context)


def _file_row(loaded: LoadedFile, root: Path) -> FileRow:
    row = FileRow(relative(loaded.path, root), loaded)
    config = loaded.config
    if config is not None:
        for flow in config.flows:
            state = "disabled" if not flow.enabled else ("draft" if flow.draft or config.draft else "live")
            row.flows.append(FlowRow(flow.id, state, flow.description, [a.type for a in flow.actions]))
    return row


async def _count_fires(conn: AsyncConnection, row: FileRow, since: datetime) -> None:
    """From the per-flow rows the recorder writes beside each trace (decision_flows), over the newest
    MAX_TRACES traces of the window: from the time of the last of them on (a trace sharing that time
    with an older one counts that one too)."""
    config = row.loaded.config
    if config is None or config.draft:
        return
    d, f = table(Decision).c, table(DecisionFlow).c
    mine = [d.agent_id == config.agent, d.decided_at >= since, d.config_revision == config.revision]
    theirs = [f.agent_id == config.agent, f.decided_at >= since, f.config_revision == config.revision]
    if config.version is not None:
        mine.append(d.agent_version == config.version)
        theirs.append(f.agent_version == config.version)
    window = select(d.id).where(*mine).limit(MAX_TRACES + 1).subquery()
    found = (await conn.execute(select(func.count()).select_from(window))).scalar_one()
    row.capped, row.traces = found > MAX_TRACES, min(found, MAX_TRACES)
    if row.capped:
        oldest = select(d.decided_at).where(*mine).order_by(d.decided_at.desc()).offset(MAX_TRACES - 1).limit(1)
        theirs.append(f.decided_at >= oldest.scalar_subquery())
    fired = func.sum(case((f.fired, 1), else_=0))
    counts = select(f.flow_id, func.count(), fired).where(*theirs).group_by(f.flow_id)
    found_counts = {r[0]: (r[1], r[2]) for r in await conn.execute(counts)}
    for flow_row in row.flows:
        flow_row.evaluated, flow_row.fired = found_counts.get(flow_row.id, (0, 0))


async def _attempts(conn: AsyncConnection, since: datetime) -> dict[str, dict[str, Any]]:
    """Per destination over the window: attempts by outcome (`deferred`: not made, see below), and the newest."""
    a = table(Attempt).c
    out: dict[str, dict[str, Any]] = {}
    # a deferral (a rate limit or waiting room was full) is recorded as a failed attempt that was not made:
    # counted apart, not as the destination failing
    kind = case(((a.outcome == "failed") & a.error.startswith(DEFERRED), "deferred"), else_=a.outcome)
    counts = select(a.destination, kind, func.count()).where(a.completed_at >= since).group_by(a.destination, kind)
    for name, outcome, n in await conn.execute(counts):
        out.setdefault(name or "(none)", {"outcomes": {}, "last": None})["outcomes"][outcome] = n
    newest = (
        select(a.destination, func.max(a.completed_at)).where(a.completed_at >= since).group_by(a.destination)
    ).subquery()
    last = select(a.destination, a.outcome, a.status_code, a.error, a.completed_at).join(
        newest, (a.destination == newest.c.destination) & (a.completed_at == newest.c[1])
    )
    for r in await conn.execute(last):
        out.setdefault(r.destination or "(none)", {"outcomes": {}, "last": None})["last"] = r
    return out
