"""Settings shared by every service: how to reach Kafka, how the runtime consumes, and the one base
class each service's settings extend (read once in the wiring, passed explicitly).

Environment: POSTCALL_KAFKA__BOOTSTRAP_SERVERS, POSTCALL_RUNTIME__MAX_IN_FLIGHT, POSTCALL_LOG_LEVEL, ...
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import types
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.routes import Route
from schemas.topics import READ_RECORD_BYTES


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="SASL_SSL for managed Kafka and Strimzi with SCRAM."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (from a Secret, never logged).")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    # (the key before the certificate: the certificate's check reads both)
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS, unless ssl_certfile holds it.")
    ssl_certfile: Path | None = Field(None, validate_default=True, description="Client certificate for mutual TLS.")
    client_id: str = Field("postcall", description="Kafka client.id prefix.")

    # The TLS files are read when the settings are, so that a wrong path or a file that is not PEM is one
    # line naming its variable and the file (run_service, the CLI), not a traceback from the first client
    # ssl makes, which names neither ("FileNotFoundError: [Errno 2] No such file or directory").

    @field_validator("ssl_cafile")
    @classmethod
    def _a_ca_bundle(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None and _tls(info):
            _loaded(path, "is no PEM bundle of CA certificates", lambda: tls_context(path, None, None))
        return path

    @field_validator("ssl_certfile")
    @classmethod
    def _a_client_certificate(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        key = info.data.get("ssl_keyfile")
        if not _tls(info):
            return path
        if path is None:
            if key is not None:
                raise ValueError("not set, but ssl_keyfile is: a client key is used with its certificate")
            return path
        what = "is not a PEM certificate with its private key" + (f" (in {key})" if key else "")
        _loaded(path, what, lambda: tls_context(None, path, key))
        return path

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (consumer, producer, admin)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            opts["ssl_context"] = tls_context(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        return opts


def tls_context(cafile: Path | None, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    """The TLS context of every Kafka client: the CA bundle (else the system's), the client certificate."""
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return ctx


def _tls(info: ValidationInfo) -> bool:
    return str(info.data.get("security_protocol", "")).endswith("SSL")


def _loaded(path: Path, what: str, load: Callable[[], object]) -> None:
    """Run `load`; a file it cannot read or use is a ValueError naming the file (never its content)."""
    try:
        load()
    except ssl.SSLError as exc:  # (an OSError too)
        raise ValueError(f"{path} {what} ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


class RuntimeSettings(BaseModel):
    max_in_flight: int = Field(64, ge=1, le=10_000, description="Records taken from Kafka and not finished.")
    ordering: Literal["key", "unordered"] = Field(
        "key", description="key: same key in order, different keys concurrently; unordered: no order."
    )
    retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 60.0, 600.0, 3600.0],
        description="Delay of each retry tier; at most the tiers the topic registry declares, each (with jitter) "
        "shorter than the retry topics' 7-day retention. With fewer, failures go to the first tiers only, and "
        "copies already waiting in the others are still read.",
    )
    retry_jitter: float = Field(0.2, ge=0, le=1, description="± fraction of jitter added to tier delays.")
    fast_path: bool = Field(
        False,
        description="For handlers that never wait on I/O: each polled batch of a partition runs in one task, "
        "its records one after the other, and the acks of all their outputs are awaited once per batch. Off: "
        "a task per record, many in flight (handlers that call an LLM or a webhook).",
    )
    retry_after_cap_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest wait a remote's Retry-After can ask for (the one cap: webhooks, Slack and the LLM); "
        "a longer one is cut to this, so one header can neither park a record nor pause a service for a day.",
    )
    unavailable_backoff_seconds: float = Field(5.0, gt=0, description="Pause after DependencyUnavailable.")
    commit_interval_seconds: float = Field(1.0, gt=0, description="How often completed offsets are committed.")
    drain_timeout_seconds: float = Field(25.0, gt=0, description="Bound on waiting for in-flight records.")
    handler_timeout_seconds: float = Field(120.0, gt=0, description="A handler running longer is retried.")
    session_timeout_ms: int = Field(30_000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, description="Heartbeat interval (background task).")
    max_poll_interval_ms: int = Field(300_000, description="Longest gap between polls before leaving the group.")
    group_instance_id: str | None = Field(None, description="Static membership id (e.g. the pod name).")
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="Start of a new group.")
    metrics_port: int = Field(9400, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; 0: none.")
    metrics_host: str = Field("0.0.0.0", description="Address the metrics endpoint binds to.")
    kafka_ready_seconds: float = Field(
        15.0,
        gt=0,
        description="/readyz answers 503 once no broker has answered a metadata request for this long (asked "
        "every third of it); the consumer lag series are withdrawn meanwhile.",
    )
    max_record_bytes: int = Field(READ_RECORD_BYTES, description="Larger records are dead-lettered as poison.")
    idle_exit_seconds: float | None = Field(
        None,
        description="Exit after this long with nothing to do (tests). Counted only once the consumer has joined its "
        "group and fetched each of its partitions: start-up and rebalances are not idle time.",
    )


class ServiceSettings(BaseSettings):
    """The base of every service's settings. The runtime's defaults come from the service's route
    (retry delays, ordering, in-flight window); POSTCALL_RUNTIME__X overrides one and keeps the rest."""

    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")
    route: ClassVar[Route | None] = None

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="How to reach Kafka.")
    runtime: RuntimeSettings = Field(
        default_factory=RuntimeSettings, description="Consumer runtime; defaults from the service's route."
    )
    log_level: str = Field("INFO", description="Python log level.")

    @model_validator(mode="before")
    @classmethod
    def _runtime_defaults_from_route(cls, data: Any) -> Any:
        if cls.route is None or not isinstance(data, dict):
            return data
        given = data.get("runtime")
        if given is None or isinstance(given, dict):
            return {**data, "runtime": {**cls.route.runtime_defaults(), **(given or {})}}
        return data  # a RuntimeSettings instance passed explicitly is taken as it is

    @field_validator("runtime")
    @classmethod
    def _route_carries_them(cls, runtime: RuntimeSettings) -> RuntimeSettings:
        """The route's start-up check of the retry delays (Processor runs it again) when the settings are
        read: one line naming POSTCALL_RUNTIME, not a traceback from the runtime's construction."""
        if cls.route is not None:
            try:
                cls.route.check(runtime.retry_delays_seconds, runtime.retry_jitter)
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix(f"{cls.route.service}: ")) from None
        return runtime


def run_service(
    label: str,
    main: Callable[[], Coroutine[Any, Any, int | None]],
    settings: type[BaseModel],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run a service's `main()` to its exit code. Settings the environment gets wrong (`settings`, read in
    `main`) are one line per variable on stderr, `label: POSTCALL_CONFIG_DIR is not set (...)`, and exit 2,
    rather than a traceback: how `python -m services.<name>` (the pods' command) and `postcall run` start.
    So is a configuration file or folder `main` cannot start with (services.common.config.ConfigError), and a
    cluster the route cannot run on (services.common.errors.StartRefused: a topic missing, too few partitions)."""
    for line in misnamed_variables(settings):
        print(f"{label}: {line}", file=sys.stderr)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(main())
    except ValidationError as exc:
        if exc.title != settings.__name__:
            raise  # not the settings: a defect, with its traceback
        lines = settings_problems(exc, model=settings)
    except SettingsError as exc:  # a variable read as JSON (a list, a mapping) that is not JSON
        lines = unparsed_variables(exc)
    except Exception as exc:
        from services.common.config import ConfigError  # (what a service imports, not every settings user)
        from services.common.errors import StartRefused

        if not isinstance(exc, ConfigError | StartRefused):
            raise
        lines = [f"cannot start: {line.removeprefix(f'{label}: ')}" for line in str(exc).splitlines()]
    else:
        return code or 0
    for line in lines:
        print(f"{label}: {line}", file=sys.stderr)
    return 2


def misnamed_variables(
    model: type[BaseModel], prefix: str = "POSTCALL_", environ: Mapping[str, str] | None = None
) -> list[str]:
    """Variables that name no setting of `model` but would with their underscores right
    (POSTCALL_KAFKA_BOOTSTRAP_SERVERS for POSTCALL_KAFKA__BOOTSTRAP_SERVERS, POSTCALL_CONFIGDIR): the
    settings ignore a variable they have no field for, so the setting kept its default, or was missing,
    without a word about the variable that was meant for it. A variable no setting's name is close to is
    left alone (another service's, or one the code reads itself)."""
    return misnamed(setting_variables(model, prefix), prefix, environ)


def misnamed(
    variables: Iterable[str], prefix: str = "POSTCALL_", environ: Mapping[str, str] | None = None
) -> list[str]:
    """`misnamed_variables` against a list of the variables that are read (several services' settings)."""
    settings = {name.upper() for name in variables}
    meant = {name.replace("_", ""): name for name in settings}
    lines = []
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in settings or any(upper.startswith(f"{s}__") for s in settings):
            continue
        if (setting := meant.get(upper.replace("_", ""))) is not None:
            nested = " (a nested setting's parts join with __)" if "__" in setting else ""
            lines.append(f"{name} is not a setting and is ignored: did you mean {setting}?{nested}")
    return lines


def setting_variables(model: type[BaseModel], prefix: str = "POSTCALL_") -> list[str]:
    """Every setting's variable: POSTCALL_LOG_LEVEL, POSTCALL_KAFKA__BOOTSTRAP_SERVERS, ..."""
    names = []
    for field_name, field in model.model_fields.items():
        name = prefix + field_name.upper()
        optional = get_origin(field.annotation) in (Union, types.UnionType)  # a group or None, not a dict's values
        kinds = (field.annotation, *(get_args(field.annotation) if optional else ()))
        groups = [kind for kind in kinds if isinstance(kind, type) and issubclass(kind, BaseModel)]
        names.extend(setting_variables(groups[0], f"{name}__") if groups else [name])
    return names


def unparsed_variables(
    exc: SettingsError, prefix: str = "POSTCALL_", environ: Mapping[str, str] | None = None
) -> list[str]:
    """A value pydantic-settings could not read as JSON, as the variable that holds it: its error names
    only the top field ('error parsing value for field "runtime"'), so the variable is found by the value
    the JSON decoder was given. The value is never shown (it may be a secret)."""
    cause = exc.__cause__
    if not isinstance(cause, json.JSONDecodeError):
        return [f"{exc}: {cause}" if cause else str(exc)]
    names = sorted(
        name
        for name, value in (os.environ if environ is None else environ).items()
        if name.upper().startswith(prefix) and value == cause.doc
    )
    where = f"{cause.msg} at character {cause.pos + 1}"
    need = "not JSON, which this setting is read as (a list such as [5, 60], or an object)"
    return [f"{name}: {need}: {where}" for name in names] or [f"{exc}: {where}"]


def settings_problems(
    exc: ValidationError, prefix: str = "POSTCALL_", model: type[BaseModel] | None = None
) -> list[str]:
    """A settings error as the environment variables to set: `POSTCALL_CONFIG_DIR: Field required`. With the
    settings class, a missing group (`ingress`) is named by its required variables
    (`POSTCALL_INGRESS__ENDPOINTS_FILE`), not by its own name, which no variable has."""
    lines = []
    for error in exc.errors(include_url=False):
        if error["type"] == "missing":
            for loc in _required(model, tuple(error["loc"])):
                name = prefix + "__".join(str(part).upper() for part in loc)
                lines.append(f"{name} is not set (a required setting; see the service's settings.py)")
        else:
            loc = tuple(error["loc"])
            said = str(error["msg"]).removeprefix("Value error, ")
            if not loc:  # a check of several settings together: its message names them
                lines.append(said)
                continue
            name = prefix + "__".join(str(part).upper() for part in loc)
            lines.append(f"{name}__*: {said}" if _model_at(model, loc) else f"{name}: {said}")
    return lines


def _model_at(model: type[BaseModel] | None, loc: tuple[object, ...]) -> type[BaseModel] | None:
    """The group of settings at `loc` in `model` (no variable has its name: `POSTCALL_INGRESS`); None when
    `loc` is a leaf or cannot be followed."""
    group: object = model
    for part in loc:
        fields = group.model_fields if isinstance(group, type) and issubclass(group, BaseModel) else {}
        if part not in fields:
            return None
        group = fields[str(part)].annotation
    return group if isinstance(group, type) and issubclass(group, BaseModel) else None


def _required(model: type[BaseModel] | None, loc: tuple[object, ...]) -> list[tuple[object, ...]]:
    """The required leaves under `loc` in `model` (`loc` itself when it is a leaf or cannot be followed)."""
    group = _model_at(model, loc)
    if group is None:
        return [loc]
    leaves = [leaf for name, f in group.model_fields.items() if f.is_required() for leaf in _required(group, (name,))]
    return [(*loc, *leaf) for leaf in leaves] or [loc]
