"""Configuration files: the operator's YAML files with secrets by reference, and the agent folder,
watched.

## Operator files

What the dispatcher's destinations file and the ingress's endpoints file share:

* `${VAR}` and `${VAR:-default}` in string values are replaced from the environment;
* a `SecretRef` names an environment variable or a file (a mounted Secret) and is read once at start,
  so a missing secret fails the start, not the first request;
* every problem is `file:line: path: message` (`Problem`), and no value from the file or the
  environment is echoed: after substitution a value may be a secret.

## The agent folder

The agent configuration folder, watched: reloaded without a restart, the last good state kept.

Shared by the router (compiled agents) and the extractor (extraction specs). The folder is polled; a
change in any YAML file's mtime, size or inode (a Kubernetes ConfigMap update swaps a symlink; a git
pull rewrites files) reloads it. Unchanged files keep their parsed form (same content hash, same
revision); a file that became bad keeps its last good revision (the loader's rule) and its problems are
logged once per change; a folder that cannot be read at all keeps the whole last good state.

What a service derives from an agent's configuration is derived here, at load time, once per revision
(never per record), and published together with its catalog in one assignment: a lookup never pairs
one catalog with another's derived objects.

With `trial=True` (a dry run: `postcall try`, the console's "Try a flow") the catalog is the folder's
`Catalog.trial()`: drafts as if published. A live service never sets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Self, TypeVar

from prometheus_client import Counter, Gauge
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas import agent_loader
from schemas.agent_checks import Loc
from schemas.agent_config import AgentConfig
from schemas.agent_loader import Catalog, Problem, load_catalog, locate, plain
from schemas.config_yaml import YamlProblem, misspelt_tag, read_yaml, unknown_key

log = logging.getLogger(__name__)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """Raised when a configuration file or a secret it names is missing or invalid; `problems` locate
    each one in the file."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


#: An HTTP header name as RFC 9110 has it (a token), at most 128 characters
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")


def _header_name(value: str) -> str:
    if not HEADER_NAME.fullmatch(value):
        raise ValueError("a header name is 1-128 letters, digits and !#$%&'*+.^_`|~- only")
    return value


#: A header name in a configuration file: refused at load, not at the first request that needs it
HeaderName = Annotated[str, AfterValidator(_header_name)]


class Strict(BaseModel):
    # a validation error must not echo the value: after ${VAR} substitution it may be a secret
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SecretRef(Strict):
    secret_env: str | None = Field(None, description="Environment variable holding the secret.")
    secret_file: Path | None = Field(None, description="File holding the secret (a mounted Secret).")
    demo_default: SecretStr | None = Field(
        None, description="Used when secret_env is unset. For the local demo only; logged as a warning."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("a secret needs exactly one of secret_env, secret_file")
        return self

    def reveal(self, environ: Mapping[str, str], owner: str) -> str:
        """The secret, stripped of surrounding whitespace. An empty one is refused: as an HMAC key it would
        let anyone sign, as a token it would match an empty header."""
        if self.secret_file is not None:
            try:
                value = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{owner}: cannot read secret file {self.secret_file}: {exc}") from None
            except UnicodeDecodeError:  # never the decoder's message: it quotes a byte of the secret
                raise ConfigError(f"{owner}: secret file {self.secret_file} is not UTF-8 text") from None
            if not value:
                raise ConfigError(f"{owner}: secret file {self.secret_file} is empty")
            return value
        value = environ.get(self.secret_env or "", "").strip()
        if value:
            return value
        if self.demo_default is not None and self.demo_default.get_secret_value().strip():
            log.warning("%s uses the demo default secret; set %s", owner, self.secret_env)
            return self.demo_default.get_secret_value().strip()
        state = "is empty" if self.secret_env in environ else "is not set"
        raise ConfigError(f"{owner}: environment variable {self.secret_env} {state}")


def substitute_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset variable without a default is an error."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"the file uses ${{{name}}}, which is not set")

    return _VAR.sub(one, text)


def yaml_mapping(text: str | bytes, source: str, top_key: str) -> Any:
    """The file as a ruamel round-trip tree (it keeps line numbers), read by the project's one YAML
    reader (no aliases, no custom tags, bounded depth); an empty file is `{}`."""
    try:
        tree = read_yaml(text)
    except YamlProblem as exc:
        problem = Problem(source, exc.line, "", f"YAML: {exc.message}")
        raise ConfigError(str(problem), (problem,)) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        problem = Problem(source, 1, "", f"expected a mapping with `{top_key}:`")
        raise ConfigError(str(problem), (problem,))
    return tree


def substituted(tree: Any, environ: Mapping[str, str], issues: list[tuple[Loc, str]]) -> Any:
    """Plain data with ${VAR} replaced in every string; each unset variable is an issue at its place."""
    return _substitute_all(plain(tree), environ, (), issues)


def _substitute_all(data: Any, environ: Mapping[str, str], loc: Loc, issues: list[tuple[Loc, str]]) -> Any:
    if isinstance(data, str):
        try:
            return substitute_env(data, environ)
        except ConfigError as exc:
            issues.append((loc, str(exc)))
            return data
    if isinstance(data, dict):
        return {k: _substitute_all(v, environ, (*loc, k), issues) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_all(v, environ, (*loc, i), issues) for i, v in enumerate(data)]
    return data


def validation_issues(
    exc: ValidationError, tags: tuple[str, ...] = (), model: type[BaseModel] | None = None
) -> list[tuple[Loc, str]]:
    """pydantic errors as (location, message), without the union tag pydantic puts after a list index;
    with the file's `model`, an unknown key names the key it may have meant."""
    out: list[tuple[Loc, str]] = []
    for error in exc.errors():  # the input for misspelt_tag, which reads a mapping's keys only
        loc = tuple(key for i, key in enumerate(error["loc"]) if not (i == 2 and key in tags))
        typo = misspelt_tag(error)
        out.append(((*loc, typo[0]), typo[1]) if typo else (loc, error_message(error, tags, model)))
    return out


M = TypeVar("M", bound=BaseModel)


def validated(
    text: str | bytes, environ: Mapping[str, str], source: str, model: type[M], top_key: str, tags: tuple[str, ...]
) -> tuple[Any, M | None, list[tuple[Loc, str]]]:
    """(the located tree, the validated file or None, its issues so far): a file's first two steps."""
    tree = yaml_mapping(text, source, top_key)
    issues: list[tuple[Loc, str]] = []
    data = substituted(tree, environ, issues)
    parsed: M | None = None
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        issues += validation_issues(exc, tags, model)
    return tree, (parsed if not issues else None), issues


def error_message(error: Any, tags: tuple[str, ...] = (), model: type[BaseModel] | None = None) -> str:
    kind, loc = error["type"], error["loc"]
    choices, tag = " | ".join(tags), str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    if kind == "extra_forbidden":
        return unknown_key(model, tuple(loc)) if model is not None else f"unknown field {loc[-1]!r}"
    if kind == "missing":
        return f"missing required field {loc[-1]!r}"
    if kind == "union_tag_not_found":
        return f"missing required field {tag!r} ({choices})"
    if kind == "union_tag_invalid":
        return f"unknown {tag} {error['ctx']['tag']!r} ({choices})"
    return str(error["msg"]).removeprefix("Value error, ")


def raise_for(issues: list[tuple[Loc, str]], tree: Any, source: str) -> None:
    if issues:
        problems = [Problem(source, *locate(tree, loc), message) for loc, message in issues]
        raise ConfigError("\n".join(map(str, problems)), tuple(problems))


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


Fingerprint = tuple[tuple[str, int, int, int], ...]
D = TypeVar("D")


def fingerprint(directory: Path) -> Fingerprint:
    """Cheap change detection: (path, mtime_ns, size, inode) of every configuration file."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if path.suffix in (".yaml", ".yml") and not any(p.startswith(".") for p in rel):
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


@dataclass(frozen=True)
class ReloadMetrics:
    """The service's own series, named by the service (dashboards and alerts read them by name)."""

    reloads: Counter  # labelled by result: ok, problems, error
    problems: Gauge
    agents: Gauge
    failed: Gauge  # 1 from a reload with result error to the next one that loads


class ConfigWatcher(Generic[D]):
    """The folder's catalog and, per agent configuration, `derive(config)`; `lookup` gives the latter."""

    def __init__(
        self,
        directory: Path,
        derive: Callable[[AgentConfig], D],
        metrics: ReloadMetrics,
        log: logging.Logger,
        *,
        trial: bool = False,
    ) -> None:
        self.directory = directory
        self.trial = trial
        self._derive = derive
        self._metrics = metrics
        self._log = log
        self._fingerprint = fingerprint(directory)
        try:
            first = self._load(None)
        except agent_loader.ConfigError as exc:  # no last good state to keep at start: the service cannot start
            raise ConfigError(
                f"configuration folder {directory}: {'; '.join(p.message for p in exc.problems)}"
            ) from None
        except OSError as exc:
            raise ConfigError(f"configuration folder {directory}: {exc}") from None
        self._state: tuple[Catalog, dict[str, D]] = (first, {})
        self._install(first)

    def _load(self, previous: Catalog | None) -> Catalog:
        catalog = load_catalog(self.directory, previous=previous)  # a trial catalog keeps the folder's files
        return catalog.trial() if self.trial else catalog

    @property
    def catalog(self) -> Catalog:
        return self._state[0]

    def lookup(self, agent_id: str, version: str | None) -> D | None:
        catalog, derived = self._state
        config = catalog.lookup(agent_id, version)
        return derived.get(config.revision) if config is not None else None

    def is_broken(self, agent_id: str) -> bool:
        """A file names this agent but has problems and no last good configuration."""
        return self._state[0].is_broken(agent_id)

    def reload_if_changed(self) -> bool:
        """Reload when the folder changed; True when it did. Never raises: the last good state stays, and
        the reload counts as an error until the folder changes again (a failure is not retried before)."""
        current = fingerprint(self.directory)
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        try:
            self._install(self._load(self.catalog))
        except (agent_loader.ConfigError, OSError) as exc:
            self._failed()
            self._log.error(
                "configuration folder unreadable; keeping the last good configuration", extra={"error": str(exc)}
            )
            return False
        except Exception:  # deriving a revision raised (a bug): the service goes on with the last good state
            self._failed()
            self._log.exception("configuration reload failed; keeping the last good configuration")
            return False
        return True

    def _failed(self) -> None:
        if not self.trial:
            self._metrics.reloads.labels("error").inc()
            self._metrics.failed.set(1)

    def _install(self, catalog: Catalog) -> None:
        previous = self._state[1]
        derived = {c.revision: previous.get(c.revision) or self._derive(c) for c in catalog.configs.values()}
        self._state = (catalog, derived)
        if self.trial:
            return  # a dry run's catalog is not the service's: no reload metrics, no log lines
        problems = catalog.problems
        for problem in problems:
            self._log.error("configuration problem: %s", problem, extra={"problem": str(problem)})
        self._metrics.reloads.labels("problems" if problems else "ok").inc()
        self._metrics.failed.set(0)
        self._metrics.problems.set(len(problems))
        self._metrics.agents.set(len(catalog.configs))
        revisions = {f"{a}@{v}" if v else a: c.revision for (a, v), c in catalog.configs.items()}
        self._log.info("configuration loaded", extra={"directory": str(self.directory), "revisions": revisions})

    @contextlib.asynccontextmanager
    async def watching(self, interval_seconds: float) -> AsyncIterator[Self]:
        """Poll for changes in the background while the block runs."""
        task = asyncio.create_task(self._watch(interval_seconds), name="config-reload")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # a reload bug must not stop the service working with the last good configuration
                self._log.exception("configuration reload failed")
