"""The docs name only things that exist.

README.md, docs/ (with docs/adr) and the comments and strings of deploy/ name environment variables,
`postcall` commands and options, `make` targets, Prometheus metrics and alerts. Each is checked against
what defines it: the services' settings classes (the resolver the manifests' check uses) or the
variables the code reads from the environment itself, the Typer app's command tree, the Makefile,
the services' metric registries, deploy/observability/alerts.yaml.

A command is only taken from code: a fenced block's line or an inline `code span` that starts with
`postcall` or `make` (after an optional `$ ` or `&& `); prose such as "every postcall pod" is not a
command. A variable a config file names for its own secret (`secret_env: X`, `${X}`) is the file's
to name, not checked. A name ending in `*` is a family: a metric's (postcall_llm_*) or a directly read
variable's (POSTCALL_TOPIC_*) prefix must begin some name; a setting's (POSTCALL_KAFKA__SASL_*) group
must exist.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from prometheus_client import REGISTRY, generate_latest
from pydantic import BaseModel, SecretStr

from services.cli.main import app
from tests.contract.test_k8s_manifests import _settings_classes, _unknown_setting
from tests.contract.test_observability import alert_rules, exported_samples

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "docs/adr").glob("*.md")])
DEPLOY = sorted(p for ext in ("yaml", "py") for p in (ROOT / "deploy").rglob(f"*.{ext}"))
# where the code reads a variable itself: os.environ["X"], os.environ.get("X"), os.getenv("X"), ...
CODE = ("services", "schemas", "tests", "bench", "deploy")
_READS = re.compile(r"""(?:environ(?:\.get|\.setdefault|\.pop)?\s*[\[(]|getenv\(|envvar=)\s*["'](POSTCALL_\w+)["']""")

# not a name a config file gives its own secret (`secret_env: POSTCALL_NATIVE_WEBHOOK_SECRET`, `${...}`)
_VARIABLE = re.compile(r"(?<!secret_env: )(?<!\$\{)\bPOSTCALL_[A-Z0-9_]*[A-Z0-9_](\*?)")
_METRIC = re.compile(r"\bpostcall_[a-z0-9_]*[a-z0-9_](\*?)")
_ALERT = re.compile(r"\bPostcall(?!Error\b)[A-Z]\w*")
_FENCE = re.compile(r"^ *(```|~~~).*?^ *\1", re.M | re.S)
_SPAN = re.compile(r"`([^`\n]+(?:\n(?!\s*\n)[^`\n]+)*)`")  # an inline code span, within one paragraph
_COMMAND_START = re.compile(r"(?:^|\$ |&& )(postcall|make) ")
_COMMAND_END = re.compile(r"\s(?:#|\||&&|;|>|2>)(?:\s|$).*", re.S)
_OPTION = re.compile(r"-{1,2}[a-zA-Z][\w-]*")


# ── the texts ────────────────────────────────────────────────────────────────────────────────────


def texts() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in (*DOCS, *DEPLOY)}


def code_lines(path: str, text: str) -> Iterator[str]:
    """The pieces of code in a text: a fenced block's lines (continued lines joined) and inline spans."""
    if path.endswith(".md"):
        for fence in _FENCE.finditer(text):
            yield from fence.group().replace("\\\n", " ").splitlines()[1:-1]
        text = _FENCE.sub("", text)
    else:  # deploy/: a comment line that is a command on its own, `#   postcall config validate ...`
        yield from (m.group(1) for m in re.finditer(r"^\s*#\s+((?:postcall|make) .*)$", text, re.M))
    for span in _SPAN.finditer(text):
        yield re.sub(r"\s*\n\s*(?:#\s*)?", " ", span.group(1))


def commands(program: str) -> Iterator[tuple[str, list[str]]]:
    """(where, the words after `program`) for every command line of `program` in the texts."""
    for path, text in texts().items():
        for code in code_lines(path, text):
            for start in _COMMAND_START.finditer(code):
                if start.group(1) == program:
                    line = _COMMAND_END.sub("", code[start.end() :])
                    try:
                        yield path, shlex.split(line)
                    except ValueError:  # an unbalanced quote
                        yield path, line.split()


def named(pattern: re.Pattern[str]) -> dict[str, set[str]]:
    """Every name the pattern finds -> the files naming it; a family (`NAME_*`) keeps its `*`."""
    found: dict[str, set[str]] = {}
    for path, text in texts().items():
        for match in pattern.finditer(text):
            found.setdefault(match.group(), set()).add(path)
    return found


# ── what exists ──────────────────────────────────────────────────────────────────────────────────


@functools.cache
def variables_read_directly() -> frozenset[str]:
    return frozenset(name for top in CODE for p in (ROOT / top).rglob("*.py") for name in _READS.findall(p.read_text()))


def variable_exists(name: str) -> bool:
    if name.endswith("*"):
        prefix = name.rstrip("*")
        if any(v.startswith(prefix) for v in variables_read_directly()):
            return True
        group = prefix.rsplit("__", 1)[0]  # POSTCALL_KAFKA__SASL_* -> POSTCALL_KAFKA
        return "__" in prefix and any(_unknown_setting(c, group) is None for c in _settings_classes().values())
    if name in variables_read_directly():
        return True
    return any(_unknown_setting(c, name) is None for c in _settings_classes().values())


@functools.cache
def metrics() -> frozenset[str]:
    families = {m.name for m in REGISTRY.collect()}  # without a counter's _total
    return frozenset(families | exported_samples(generate_latest(REGISTRY).decode()))


@functools.cache
def make_targets() -> frozenset[str]:
    makefile = (ROOT / "Makefile").read_text()
    rules = re.findall(r"^([^\s:#=][^:=]*?)\s*::?(?!=)", makefile, re.M)
    phony = re.findall(r"^\.PHONY:(.*)$", makefile, re.M)
    return frozenset(t for line in (*rules, *phony) for t in line.split())


def option_names(command: Any) -> set[str]:
    return {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def unknown_in_command(words: list[str]) -> str | None:
    """What in `postcall <words>` the Typer app does not have (None when all of it exists)."""
    command: Any = typer.main.get_command(app)
    path = "postcall"
    for word in words:
        option = _OPTION.fullmatch(word.split("=")[0].strip("[]"))  # `[--days N]`
        if option:
            if option.group() not in option_names(command):
                return f"{path} has no option {option.group()}"
        elif hasattr(command, "commands"):  # a group: the word is one of its commands
            alternatives = word.split("/")  # `postcall dlq list/show/replay`
            if not all(re.fullmatch(r"[a-z][a-z-]*", a) for a in alternatives):
                return None  # a placeholder: `postcall run <service>`, `...`
            if missing := [a for a in alternatives if a not in command.commands]:
                return f"{path} has no command {', '.join(missing)}"
            if len(alternatives) > 1:
                return None  # their options differ: not checked
            command, path = command.commands[word], f"{path} {word}"
    return None


# ── the checks ───────────────────────────────────────────────────────────────────────────────────


def test_every_postcall_variable_the_docs_name_is_a_setting_or_read_by_the_code() -> None:
    found = named(_VARIABLE)
    assert "POSTCALL_KAFKA__BOOTSTRAP_SERVERS" in found and "POSTCALL_TOPIC_PARTITIONS" in found
    missing = {name: sorted(paths) for name, paths in found.items() if not variable_exists(name)}
    assert not missing, f"no setting and no code reads these: {missing}"


def test_every_postcall_command_and_option_the_docs_name_exists() -> None:
    found = list(commands("postcall"))
    assert len(found) > 50, "the extraction found almost no command"
    problems = sorted({f"{path}: postcall {' '.join(w)}: {why}" for path, w in found if (why := unknown_in_command(w))})
    assert not problems, "\n".join(problems)


def test_every_make_target_the_docs_name_exists() -> None:
    found = list(commands("make"))
    assert len(found) > 10, "the extraction found almost no make command"
    makefile = (ROOT / "Makefile").read_text()
    problems = set()
    for path, words in found:
        for word in words:
            variable, assigns, _ = word.partition("=")
            if assigns and not re.search(rf"\b{re.escape(variable)}\b", makefile):
                problems.add(f"{path}: make {' '.join(words)}: the Makefile has no variable {variable}")
            elif not assigns and re.fullmatch(r"[\w.-]+", word) and word not in make_targets():
                problems.add(f"{path}: make {' '.join(words)}: the Makefile has no target {word}")
    assert not problems, "\n".join(sorted(problems))


def test_every_metric_the_docs_name_is_exported() -> None:
    found = named(_METRIC)
    assert "postcall_records_processed_total" in metrics() and "postcall_dead_letters_total" in found

    def exists(name: str) -> bool:
        return any(m.startswith(name.rstrip("*")) for m in metrics()) if name.endswith("*") else name in metrics()

    missing = {name: sorted(paths) for name, paths in found.items() if not exists(name)}
    assert not missing, f"no service exports these: {missing}"


def test_every_alert_the_docs_name_is_a_rule() -> None:
    found = named(_ALERT)
    rules = {r["alert"] for r in alert_rules()}
    assert "PostcallConsumerLagGrowing" in found
    missing = {name: sorted(paths) for name, paths in found.items() if name not in rules}
    assert not missing, f"deploy/observability/alerts.yaml has no such alert: {missing}"


_DURATION = r"\d+(?:\.\d+)? (?:s|min|h)"
_SCHEDULE = re.compile(rf"{_DURATION}(?:, {_DURATION}){{2,}}")  # three or more: a retry schedule


def spoken(seconds: float) -> str:
    """A delay as the docs write it: 5 s, 1 min, 10 min, 1 h."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def test_the_retry_schedules_and_dead_letter_categories_the_docs_name_are_the_runtimes() -> None:
    """A runbook said a bad agent file's conversations retry "(5 s, 1 min, 10 min, 1 h) in the extractor
    and the router" (the router's are 5 s, 1 min, 10 min) and then dead-letter as `retries_exhausted`
    (the category is `retryable-exhausted`: `postcall dlq list --reason retries_exhausted` finds none)."""
    from schemas import headers as h
    from schemas.routes import ROUTES

    schedules = {", ".join(spoken(d) for d in r.retry_delays_seconds) for r in ROUTES if r.retry_delays_seconds}
    categories = {h.CATEGORY_POISON, h.CATEGORY_PERMANENT, h.CATEGORY_RETRIES_EXHAUSTED}
    assert "5 s, 1 min, 10 min" in schedules and "5 s, 5 min, 30 min, 2 h, 5 h, 10 h" in schedules
    problems = []
    for path in DOCS:
        where, text = path.relative_to(ROOT), path.read_text()
        spoken_text = " ".join(text.split())
        problems += [f"{where}: retry schedule {m}" for m in _SCHEDULE.findall(spoken_text) if m not in schedules]
        for code in code_lines(str(where), text):
            for word in re.findall(r"\bretr[\w-]*exhausted\b", code):  # not credit_exhausted (an end reason)
                if word not in categories:
                    problems.append(f"{where}: dead-letter category `{word}`")
    assert not problems, f"the runtime has no such schedule or category (routes: {sorted(schedules)}): {problems}"


def setting_default(variable: str) -> object:
    """The default of POSTCALL_A__B in the first service's settings that has it; KeyError when none does."""
    for model in _settings_classes().values():
        current: type[BaseModel] = model
        for part in variable.removeprefix("POSTCALL_").lower().split("__"):
            field = current.model_fields.get(part)
            if field is None:
                break
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                current = field.annotation
                continue
            value = field.get_default(call_default_factory=True)
            return value.get_secret_value() if isinstance(value, SecretStr) else value
    raise KeyError(variable)


def test_every_settings_table_in_the_docs_gives_the_defaults_the_settings_have() -> None:
    """A docs table row `| `POSTCALL_A`, `POSTCALL_B` | a, b | ...` states the defaults of those settings
    (docs/store.md's table of the recorder's and the API's settings)."""
    rows = [
        (path, m.group(1), m.group(2))
        for path in DOCS
        for m in re.finditer(r"^\| *((?:`POSTCALL_\w+`(?:, )?)+) *\| *([^|]+?) *\|", path.read_text(), re.M)
    ]
    assert len(rows) >= 6, "the extraction found no settings table"
    problems = []
    for path, names_cell, defaults_cell in rows:
        names = re.findall(r"POSTCALL_\w+", names_cell)
        given = [re.sub(r"\s*\(.*\)$", "", v).strip("` ") for v in defaults_cell.split(", ")]
        for name, text in zip(names, given, strict=True):
            default = setting_default(name)
            same = (
                text == str(default).lower()
                if isinstance(default, bool)
                else float(text) == default
                if isinstance(default, int | float)
                else text == str(default)
            )
            if not same:
                problems.append(f"{path.relative_to(ROOT)}: {name}: the docs say {text}, the default is {default!r}")
    assert not problems, problems


def test_the_command_extraction_takes_code_not_prose() -> None:
    assert list(code_lines("x.md", "every postcall pod; run `postcall dlq replay --rate 5 # why`")) == [
        "postcall dlq replay --rate 5 # why"
    ]
    assert unknown_in_command(["dlq", "replay", "--rate", "5"]) is None
    assert unknown_in_command(["dlq", "list/show/replay"]) is None
    assert unknown_in_command(["dlq", "replay", "--speed", "5"]) == "postcall dlq replay has no option --speed"
    assert unknown_in_command(["dlq", "resend"]) == "postcall dlq has no command resend"
    assert unknown_in_command(["run", "<service>"]) is None
    assert unknown_in_command(["store", "prune", "[--days", "N]"]) is None
    assert unknown_in_command(["store", "prune", "[--weeks", "N]"]) == "postcall store prune has no option --weeks"
    assert "lint" in make_targets() and ".venv/.installed" not in make_targets()
