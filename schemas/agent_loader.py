"""Loading a folder of agent configuration files: YAML with line numbers, library templates, checks.

`load_catalog(dir)` reads every *.yaml / *.yml below `dir` (hidden paths skipped, so a Kubernetes
ConfigMap's `..data` copies are not read twice) and never raises for a bad file: each problem is a
`Problem(file, line, path, message)`, and with `previous=` a file that became bad keeps its last good
configuration. A configuration's revision is the content hash of its file, so every output can say
which revision it used. The checks that need meaning (operators per field type, template variables,
recipient routes, regex safety) are in `schemas.agent_checks`.

A file marked `draft: true` is validated like any other but indexed apart (`Catalog.drafts`): `lookup`,
which serves live traffic, never returns it; `trial()` is the catalog a dry run uses (`postcall try`,
the console), with drafts as if published.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.agent_checks import Loc, enabled_conditions, semantic_problems, template_strings
from schemas.agent_config import (
    AgentConfig,
    AgentFile,
    AiCondition,
    EmailAction,
    ExtractionSpec,
    FieldCondition,
    TriggerSpec,
    VarRef,
    condition_kind,
    parse_template,
)
from schemas.agent_library import library
from schemas.config_yaml import YamlProblem, misspelt_tag, read_yaml, unknown_key

Library = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """Raised by `Catalog.raise_for_problems()` when any file has a problem."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class LoadedFile:
    path: str
    digest: str
    agent: str | None  # read from the file when possible, even when it has problems
    config: AgentConfig | None  # with `stale`, the last good configuration of this path
    problems: tuple[Problem, ...] = ()
    stale: bool = False
    tree: Any = field(default=None, repr=False, compare=False)  # ruamel round-trip tree: lines
    draft: bool = False  # read from the file when possible, even when it has problems
    version: str | None = None  # read from the file when possible, even when it has problems

    def locate(self, loc: Loc) -> tuple[int, str]:
        return locate(self.tree, loc)


@dataclass(frozen=True)
class Catalog:
    directory: str
    files: Mapping[str, LoadedFile]
    configs: Mapping[tuple[str, str | None], AgentConfig]  # published files: they serve live traffic
    drafts: Mapping[tuple[str, str | None], AgentConfig] = field(default_factory=dict)  # draft files: tried only

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(p for f in self.files.values() for p in f.problems)

    def lookup(self, agent_id: str, version: str | None = None) -> AgentConfig | None:
        """The version's own file when there is one, else the agent's default file. None while the
        version's own file has never been valid: its conversations wait for it (is_broken), they are
        not run by the default file's flows."""
        if version is not None and (agent_id, version) in self.configs:
            return self.configs[(agent_id, version)]
        if version is not None and (agent_id, version) in self._broken_versions:
            return None
        return self.configs.get((agent_id, None))

    @functools.cached_property
    def _broken_versions(self) -> frozenset[tuple[str | None, str]]:
        """(agent, version) of the published version files that have never been valid (once per catalog:
        lookup is on every record's path)."""
        return frozenset(
            (f.agent, f.version)
            for f in self.files.values()
            if f.version is not None and f.config is None and not f.draft
        )

    def is_broken(self, agent_id: str) -> bool:
        """A published file names this agent but has problems and no last good configuration."""
        return any(f.agent == agent_id and f.config is None and not f.draft for f in self.files.values())

    def trial(self) -> Catalog:
        """The catalog a dry run uses: each agent's draft file over its published one, and every draft
        mark removed (the flows run as they would once published). Never for live traffic."""
        merged = {key: published(config) for key, config in {**self.configs, **self.drafts}.items()}
        return Catalog(self.directory, self.files, merged)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _not_a_folder(root: Path) -> str:
    """Why `root` cannot be read as the folder of agent files, and what to give instead."""
    if root.is_file():
        return f"not a directory: a file; give the folder of agent files that holds it ({root.parent})"
    return "not a directory: nothing exists at this path"


def load_catalog(directory: str | Path, *, previous: Catalog | None = None, library: Library | None = None) -> Catalog:
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError((Problem(str(root), 0, "", _not_a_folder(root)),))
    lib = library if library is not None else _default_library()
    old = previous.files if previous is not None else {}
    files: dict[str, LoadedFile] = {}
    for path in _config_files(root):
        name = str(path)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        loaded = old[name] if name in old and old[name].digest == digest else load_file(name, data, lib)
        if loaded.config is None and name in old and old[name].config is not None:
            loaded = LoadedFile(
                name,
                digest,
                loaded.agent,
                old[name].config,
                loaded.problems,
                True,
                loaded.tree,
                loaded.draft,
                loaded.version,
            )
        files[name] = loaded
    return Catalog(str(root), files, _index(files, drafts=False), _index(files, drafts=True))


def published(config: AgentConfig) -> AgentConfig:
    """The configuration as it will run once published: no draft mark on the file or on any flow."""
    if not config.draft and not any(f.draft for f in config.flows):
        return config
    flows = [f.model_copy(update={"draft": False}) if f.draft else f for f in config.flows]
    return config.model_copy(update={"draft": False, "flows": flows})


def _config_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _index(files: dict[str, LoadedFile], *, drafts: bool) -> dict[tuple[str, str | None], AgentConfig]:
    """Published and draft files are indexed apart: a draft may sit beside the file it will replace."""
    configs: dict[tuple[str, str | None], AgentConfig] = {}
    for name, loaded in list(files.items()):
        cfg = loaded.config
        if cfg is None or cfg.draft != drafts:
            continue
        key = (cfg.agent, cfg.version)
        if key in configs:
            line, _ = loaded.locate(("agent",))
            what = ("draft of " if drafts else "") + f"agent {cfg.agent!r}"
            what += f" version {cfg.version!r}" if cfg.version else ""
            dup = Problem(name, line, "agent", f"{what} is already configured in {configs[key].source}")
            files[name] = LoadedFile(
                name,
                loaded.digest,
                loaded.agent,
                None,
                (*loaded.problems, dup),
                tree=loaded.tree,
                draft=loaded.draft,
                version=loaded.version,
            )
            continue
        configs[key] = cfg
    return configs


def load_file(name: str, data: bytes, library: Library) -> LoadedFile:
    """Parse, expand library templates, validate and check one file."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        tree = read_yaml(data)
    except YamlProblem as exc:
        return LoadedFile(name, digest, None, None, (Problem(name, exc.line, "", f"YAML: {exc.message}"),))
    if not isinstance(tree, dict):
        return LoadedFile(name, digest, None, None, (Problem(name, 1, "", "expected a mapping with `agent:`"),))
    raw = plain(tree)
    agent = raw.get("agent") if isinstance(raw.get("agent"), str) else None
    draft = raw.get("draft") is True
    version = raw.get("version")
    version = str(version) if isinstance(version, str | int | float) and not isinstance(version, bool) else None
    issues, from_template = _expand_templates(raw, library)
    issues += wide_integers(raw, ())
    if problem := _version_problem(tree, data):
        issues.append((("version",), problem))
    file_cfg: AgentFile | None = None
    unexpanded = {loc[1] for loc, _ in issues if loc[2:3] == ("use_template",)}
    try:
        file_cfg = AgentFile.model_validate(raw)
    except ValidationError as exc:
        found = [_located(raw, e) for e in exc.errors()]
        issues += [
            (loc, msg) for loc, msg in found if not (len(loc) > 1 and loc[0] == "flows" and loc[1] in unexpanded)
        ]
        # one pass: the meaning of the parts that did validate is checked too, not in a second round
        issues += _salvaged_problems(raw, [loc for loc, _ in found])
    if file_cfg is not None:
        issues += list(semantic_problems(file_cfg))
    problems = _problems(name, tree, [_hint(loc, msg, from_template) for loc, msg in issues])
    if problems or file_cfg is None:
        return LoadedFile(name, digest, agent, None, problems, tree=tree, draft=draft, version=version)
    config = AgentConfig(**dict(file_cfg), revision=digest, source=name)
    return LoadedFile(name, digest, agent, config, (), tree=tree, draft=draft, version=version)


def _version_problem(tree: Any, data: bytes) -> str | None:
    """A `version:` YAML reads as a number is that number's text, which need not be what was written:
    `3.10` would be "3.1" and `03` "3", and the file would silently never serve agent.version "3.10"."""
    value = tree.get("version")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    line, column = tree.lc.value("version")
    found = re.match(r"[^\s,}#]+", data.decode().splitlines()[line][column:])
    written = found.group() if found else str(value)
    if written == str(value):
        return None
    return f'version {written} is read as the number {value}: quote it (version: "{written}")'


# what orjson writes (a flow's revision, an action's body and digest, a trace): a 64-bit integer
INTEGER_RANGE = range(-(2**63), 2**64)


def wide_integers(node: Any, loc: Loc) -> list[tuple[Loc, str]]:
    """Every integer the file holds beyond 64 bits (`version:` is read as text). Such a value loaded, and
    then compiling the agent (its flows' revisions) raised orjson's TypeError: the router could not
    start, and a reload kept every agent's last good configuration, naming no file."""
    if isinstance(node, dict):
        return [issue for k, v in node.items() if loc or k != "version" for issue in wide_integers(v, (*loc, k))]
    if isinstance(node, list):
        return [issue for i, v in enumerate(node) for issue in wide_integers(v, (*loc, i))]
    if type(node) is int and node not in INTEGER_RANGE:
        return [(loc, "an integer outside the 64 bits JSON numbers carry here (-2**63 to 2**64 - 1): quote it as text")]
    return []


LISTS = ("flows", "recipient_routes")  # a bad item leaves its siblings checkable


def _salvaged_problems(raw: dict[str, Any], bad: list[Loc]) -> list[tuple[Loc, str]]:
    """Semantic problems of the file without its invalid parts (their shape problems are reported
    already): invalid flows and recipient routes are left out and the locations mapped back; with an
    invalid extraction section nothing is checked (every field condition would look wrong)."""
    broken = {loc[0] for loc in bad if loc}
    if "extraction" in broken or any(len(loc) < 2 and loc and loc[0] in LISTS for loc in bad):
        return []
    salvaged = {k: v for k, v in raw.items() if k not in broken or k in LISTS}
    salvaged.setdefault("agent", "unnamed")
    kept: dict[str, list[int]] = {}
    for name in LISTS:
        items = raw.get(name)
        if not isinstance(items, list):
            continue
        dropped = {loc[1] for loc in bad if len(loc) > 1 and loc[0] == name}
        kept[name] = [i for i in range(len(items)) if i not in dropped]
        salvaged[name] = [items[i] for i in kept[name]]
    try:
        partial = AgentFile.model_validate(salvaged)
    except ValidationError:
        return []
    out = []
    for loc, message in semantic_problems(partial):
        if len(loc) > 1 and loc[0] in kept and isinstance(loc[1], int):
            loc = (loc[0], kept[str(loc[0])][loc[1]], *loc[2:])
        out.append((loc, message))
    return out


def _hint(loc: Loc, message: str, from_template: dict[int, str]) -> tuple[Loc, str]:
    if len(loc) > 2 and loc[0] == "flows" and loc[1] in from_template and loc[2] != "use_template":
        return loc, f"{message} (flow from template {from_template[int(loc[1])]!r})"
    return loc, message


def _problems(name: str, tree: Any, issues: list[tuple[Loc, str]]) -> tuple[Problem, ...]:
    out: dict[tuple[int, str], Problem] = {}
    for loc, message in issues:
        line, path = locate(tree, loc)
        out.setdefault((line, path), Problem(name, line, path, message))  # one per place: unions repeat
    return tuple(sorted(out.values(), key=lambda p: p.line))


# ── YAML to plain data, and pydantic locations back to lines ──────────────────────────────────────


def plain(node: Any) -> Any:
    """ruamel round-trip nodes to plain Python (bool, int, float, str; dates as ISO text)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, date):
        return node.isoformat()
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _model_loc(raw: Any, loc: tuple[int | str, ...]) -> Loc:
    """Drop pydantic's union tags from an error location, keeping the keys that exist in the data."""
    out: list[int | str] = []
    node = raw
    tag_done = False  # a node carries at most one tag, right before its own keys
    for i, key in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and not tag_done and _is_tag(node, key):
            tag_done = True
            continue
        tag_done = False
        if _has(node, key):
            node = node[key]
        elif not last:
            continue  # a union member's name
        else:
            node = None
        out.append(key)
    return tuple(out)


def _has(node: Any, key: int | str) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def _is_tag(node: dict[str, Any], key: int | str) -> bool:
    """pydantic puts the chosen union member's tag in error locations: an action type, a condition kind."""
    return (key == node.get("type") and key not in node) or key == condition_kind(node)


def locate(tree: Any, loc: Loc) -> tuple[int, str]:
    """1-based line of the deepest node of `loc` present in the file, and `loc` as `a.b[1].c`."""
    line = 1
    node = tree
    for key in loc:
        lc = getattr(node, "lc", None)
        if isinstance(node, dict) and key in node and lc is not None:
            line = lc.key(key)[0] + 1
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node) and lc is not None:
            line = lc.item(key)[0] + 1
            node = node[key]
        else:
            break
    return line, format_loc(loc)


def format_loc(loc: Loc) -> str:
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _located(raw: Any, error: Any) -> tuple[Loc, str]:
    typo = misspelt_tag(error)
    if typo is not None:
        return (*_model_loc(raw, error["loc"]), typo[0]), typo[1]
    return _model_loc(raw, error["loc"]), _message(error)


def _message(error: Any) -> str:
    kind, loc, msg = error["type"], error["loc"], str(error["msg"])
    if kind == "extra_forbidden":
        return unknown_key(AgentFile, loc)
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    if kind == "union_tag_not_found":  # pydantic: "Unable to extract tag using discriminator 'type'"
        return f"missing required field {str(error.get('ctx', {}).get('discriminator', '')).strip(chr(39))!r}"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"unknown action type {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
    return msg.removeprefix("Value error, ")


# ── Library templates ─────────────────────────────────────────────────────────────────────────────


def _default_library() -> Library:
    return library()


def _expand_templates(raw: dict[str, Any], library: Library) -> tuple[list[tuple[Loc, str]], dict[int, str]]:
    """`use_template: name` flows become the template's flow with the file's keys over it."""
    issues: list[tuple[Loc, str]] = []
    expanded: dict[int, str] = {}
    flows = raw.get("flows")
    if not isinstance(flows, list):
        return issues, expanded
    for i, flow in enumerate(flows):
        if isinstance(flow, dict) and isinstance(flow.get("use_template"), str):
            flows[i], found = _expand_flow(flow, library)
            issues += [(("flows", i, *loc), msg) for loc, msg in found]
            expanded[i] = flow["use_template"]
    return issues, expanded


def _expand_flow(flow: dict[str, Any], library: Library) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    name = flow["use_template"]
    if name not in library:
        return flow, [(("use_template",), f"unknown template {name!r} (known: {', '.join(sorted(library))})")]
    base = copy.deepcopy(dict(library[name]["flow"]))
    out = {**base, **{k: v for k, v in flow.items() if k not in ("actions", "add_actions")}}
    issues: list[tuple[Loc, str]] = []
    patches = flow.get("actions")
    if isinstance(patches, dict):
        by_id = {a.get("id"): a for a in base["actions"]}
        for action_id, patch in patches.items():
            if action_id not in by_id:
                known = ", ".join(str(k) for k in by_id)
                issues.append((("actions", action_id), f"template {name!r} has no action {action_id!r} ({known})"))
            elif not isinstance(patch, dict):
                issues.append((("actions", action_id), "an action override is a mapping of fields"))
            else:
                by_id[action_id].update(patch)
    elif patches is not None:
        out["actions"] = patches
    if isinstance(flow.get("add_actions"), list):
        out["actions"] = [*out.get("actions", []), *flow["add_actions"]]
    return out, issues


# ── What the extractor must fill ──────────────────────────────────────────────────────────────────


def extraction_spec(config: AgentConfig) -> ExtractionSpec:
    """Fields, every dyn_* name templates or conditions use, every ai trigger and recipient route of
    the enabled flows and actions: the one LLM call fills all of them. A draft flow asks nothing on live
    traffic (its questions are asked in a dry run, where `Catalog.trial()` removed the mark)."""
    flows = [f for f in config.flows if f.enabled and not f.draft]
    dynamic: set[str] = set()
    for text in template_strings(flows):
        dynamic.update(p.name for p in parse_template(text) if isinstance(p, VarRef) and p.name.startswith("dyn_"))
    triggers: dict[str, TriggerSpec] = {}
    for cond in (c for flow in flows for c in enabled_conditions(flow)):
        if isinstance(cond, FieldCondition) and cond.field.startswith("dyn_"):
            dynamic.add(cond.field)
        elif isinstance(cond, AiCondition):
            triggers.setdefault(cond.trigger_id, TriggerSpec(id=cond.trigger_id, question=cond.ai))
    used_routes = {
        a.recipients for f in flows for a in f.actions if isinstance(a, EmailAction) and a.enabled and a.recipients
    }
    return ExtractionSpec(
        agent_id=config.agent,
        config_revision=config.revision,
        provider=config.extraction.provider,
        model=config.extraction.model,
        min_confidence=config.extraction.min_confidence,
        fields=list(config.extraction.fields),
        dynamic_variables=sorted(dynamic),
        triggers=list(triggers.values()),
        recipient_routes=[r for r in config.recipient_routes if r.id in used_routes],
        summary=config.extraction.summary,
        trust_platform=config.extraction.trust_platform,
    )
