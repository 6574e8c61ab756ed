"""`postcall config validate <dir>`: refuse a bad agent configuration before it is deployed.

One line per problem, `file:line: path: message`, and exit code 1 (also for a folder without one agent file,
so that a CI job pointed at the wrong folder fails):

    examples/agents/sales-line.yaml:12: flows[1].when.op: '>' is not valid for boolean field 'follow_up_required'

Checked: YAML syntax, unknown fields, missing fields, unknown action types and end reasons, operators
valid for the field's type and values of the field's type, `matches` patterns RE2 cannot compile, templates naming
undefined variables (any `dyn_*` name is defined: it makes the extractor extract it), unknown
recipient routes and library templates, duplicate flow ids and duplicate agent files, email recipients
rendered from caller-influenced values without `allowed_domains`, http action paths, headers and result
pointers, and, with `--destinations <the dispatcher's destinations file>`, that every destination exists
and is of a kind the action can use, and that file's own blocks (kinds, auth, headers; secrets are not
read, and a value from an unset ${VAR} is not judged). Its timeouts are checked against the dispatcher's
attempt bound (services.dispatcher.settings.AttemptBound) computed from the dispatcher's settings as the
dispatcher reads them, from this environment's POSTCALL_ variables (defaults where unset: 104 s); a note on
stderr says which values were used, and the dispatcher checks again at its start with its own.
The router runs exactly these checks when it (re)loads the folder.

Warnings (exit code 0, `file:line: path: warning: ...`): an email whose recipient list can render empty
at run time, such as one sent only to `{{customer_email}}` (empty without a linked contact).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from schemas.agent_checks import recipient_warnings
from schemas.agent_library import library
from schemas.agent_loader import Catalog, ConfigError, LoadedFile, Problem, load_catalog, plain
from schemas.config_yaml import YamlProblem, read_yaml
from services.common.settings import settings_problems
from services.dispatcher import destinations as destinations_file
from services.dispatcher.settings import AttemptBound, DispatcherSettings

app = typer.Typer(help="Agent configuration: validate a folder, list the template library.", no_args_is_help=True)

# The destination kind each action type can use (see services/dispatcher/executors).
KINDS = {
    "webhook": "http",
    "http": "http",
    "append_row": "google_sheets",
    "slack": "slack",
    "teams": "teams",
    "email": "smtp",
    "schedule_call": "http",
    "task": "http",
    "team_alert": "http",
}


@app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="Folder of agent configuration YAML files.")],
    destinations: Annotated[
        Path | None,
        typer.Option("--destinations", "-d", help="The dispatcher's destinations file: check destination names."),
    ] = None,
) -> None:
    """Check every agent file in DIRECTORY; exit 1 with one line per problem."""
    try:
        catalog = load_catalog(directory)
    except ConfigError as exc:
        _fail([str(p) for p in exc.problems])
    except OSError as exc:  # a file unreadable, or gone while the folder was walked (a ConfigMap's update)
        _fail([f"{directory}: cannot read the folder: {exc}"])
    if not catalog.files:
        _fail([str(p) for p in empty_folder_problems(catalog)])
    found = list(catalog.problems)
    unstartable: list[str] = []  # dispatcher settings of this environment the dispatcher would not start with
    if destinations is None:
        typer.echo(
            "note: destinations not checked (pass --destinations <the dispatcher's destinations file>)", err=True
        )
    else:
        known = _destination_kinds(destinations)
        found += destination_problems(catalog, known)
        bound, unstartable = dispatcher_attempt_bound(destinations)
        # its own blocks: kinds, auth, headers, timeouts (no secret read)
        found += destinations_file.check(destinations, attempt_bound=bound)
    problems = [str(p) for p in sorted(found, key=lambda p: (p.file, p.line))] + unstartable  # in file order
    if problems:
        _fail(problems)
    for warning in recipient_warning_lines(catalog):
        typer.echo(warning)
    agents = sorted(f"{a}@{v}" if v else a for a, v in catalog.configs)
    drafts = sorted(f"{a}@{v}" if v else a for a, v in catalog.drafts)
    typer.echo(
        f"ok: {len(catalog.files)} file(s), agents: {', '.join(agents) or 'none'}"
        + (f"; drafts (never live): {', '.join(drafts)}" if drafts else "")
    )


@app.command("templates")
def templates() -> None:
    """List the template library (use one in a flow with `use_template: <name>`)."""
    for name, template in library().items():
        typer.echo(f"{name:22} {template['title']}: {template['flow']['when']['ai']}")


def dispatcher_attempt_bound(destinations: Path) -> tuple[AttemptBound | None, list[str]]:
    """The dispatcher's attempt bound from its settings read as the dispatcher reads them (this environment's
    POSTCALL_ variables, `destinations` as its file), with a note on stderr naming the values; with settings
    the dispatcher would not start with, None and those settings as problems."""
    try:
        settings = DispatcherSettings(destinations_file=destinations)
    except ValidationError as exc:
        lines = settings_problems(exc, model=DispatcherSettings)
        return None, [f"dispatcher settings (this environment): {line}" for line in lines]
    bound = settings.attempt_bound
    typer.echo(
        f"note: timeouts checked against {bound.seconds:g} s, {bound.made_of()}, the dispatcher's settings as "
        "read from this environment (POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS, POSTCALL_MAX_WAIT_SECONDS); "
        "the dispatcher checks them again at its start with its own",
        err=True,
    )
    return bound, []


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        typer.echo(line)
    typer.echo(f"{len(lines)} problem(s)", err=True)
    raise typer.Exit(1)


def _destination_kinds(path: Path) -> dict[str, str]:
    try:
        return destination_kinds(path)
    except OSError as exc:
        typer.echo(f"{path}: cannot read the destinations file: {exc}", err=True)
        raise typer.Exit(1) from None
    except YamlProblem as exc:
        typer.echo(f"{path}:{exc.line}: YAML: {exc.message}", err=True)
        raise typer.Exit(1) from None


def destination_kinds(path: Path) -> dict[str, str]:
    """name -> kind from the dispatcher's destinations file (only names and kinds are read: no URL, no
    secret); OSError or YamlProblem when it cannot be read."""
    data: Any = plain(read_yaml(path.read_bytes()))
    entries = data.get("destinations", []) if isinstance(data, dict) else []
    return {str(d["name"]): str(d.get("kind", "http")) for d in entries if isinstance(d, dict) and "name" in d}


def empty_folder_problems(catalog: Catalog) -> list[Problem]:
    """A folder with no agent file configures nothing: most likely the wrong folder, so it is a problem."""
    if catalog.files:
        return []
    return [Problem(catalog.directory, 0, "", "no agent configuration file (*.yaml or *.yml) found in this folder")]


def recipient_warning_lines(catalog: Catalog) -> Iterator[str]:
    for loaded in catalog.files.values():
        if loaded.config is not None and not loaded.stale:
            for loc, message in recipient_warnings(loaded.config.flows):
                yield str(_problem(loaded, loc, f"warning: {message}"))


def destination_problems(catalog: Catalog, known: dict[str, str]) -> Iterator[Problem]:
    """Read off each file's YAML, so that a file with other problems is checked in the same run."""
    for loaded in catalog.files.values():
        for i, j, action_type, destination in _destinations(plain(loaded.tree)):
            message = _destination_message(action_type, destination, known)
            if message:
                yield _problem(loaded, ("flows", i, "actions", j, "destination"), message)


def _destinations(raw: Any) -> Iterator[tuple[int, int, str, str]]:
    flows = raw.get("flows") if isinstance(raw, dict) else None
    for i, flow in enumerate(flows if isinstance(flows, list) else []):
        actions = flow.get("actions") if isinstance(flow, dict) else None
        for j, action in enumerate(actions if isinstance(actions, list) else []):
            if not isinstance(action, dict):
                continue
            kind, destination = action.get("type"), action.get("destination")
            if kind in KINDS and isinstance(destination, str):  # an unknown type is reported already
                yield i, j, kind, destination


def _destination_message(action_type: str, name: str, known: dict[str, str]) -> str | None:
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown destination {name!r} ({hint}known: {', '.join(sorted(known)) or 'none'})"
    wanted = KINDS[action_type]
    if known[name] != wanted:
        return f"destination {name!r} is a {known[name]} destination; a {action_type} action needs {wanted}"
    return None


def _problem(loaded: LoadedFile, loc: tuple[int | str, ...], message: str) -> Problem:
    line, path = loaded.locate(loc)
    return Problem(loaded.path, line, path, message)
