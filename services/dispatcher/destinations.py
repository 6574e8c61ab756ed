"""Where side effects go: the destinations file, and the secrets it points at.

    destinations:
      - name: crm
        kind: http                              # http | slack | smtp
        url: https://crm.example.com/hooks/postcall
        signing_secrets:                        # Standard Webhooks whsec_ secrets; first = current
          - {secret_file: /var/run/secrets/crm/whsec}
          - {secret_env: CRM_WEBHOOK_SECRET_PREVIOUS}
        headers:                                # literal values, or secrets by reference
          x-tenant: acme
          authorization: {secret_env: CRM_TOKEN, prefix: "Bearer "}
        max_concurrency: 16
        rate_limit_per_second: 20

`${VAR}` and `${VAR:-default}` in the file's values are replaced from the environment. Secrets
are never in the file itself: a SecretRef names an environment variable or a file (a mounted Secret),
read once at start; a missing secret fails the start, not the first delivery. Action records only name
a destination.

A header name must be an HTTP token and a header value printable ASCII: a CR, LF or other control
character (a token file ending in a newline inside a `${VAR}`, say) is refused at load, naming the
header and where its value came from, never the value. Every header value and a secret URL are
treated as secrets afterwards: `Registry.redact` scrubs them from any text that leaves the process
(errors, results, dead letters, logs), even text a receiver echoed back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from schemas.agent_checks import Loc
from services.common.configfile import (
    ConfigError,
    SecretRef,
    Strict,
    raise_for,
    read_bytes,
    substitute_env,
    substituted,
    validation_issues,
    yaml_mapping,
)
from services.dispatcher.breaker import BreakerPolicy
from services.dispatcher.signing import Signer

__all__ = ["ConfigError", "SecretRef", "load", "parse", "substitute_env"]


class HeaderSecret(SecretRef):
    prefix: str = Field("", description='Text before the secret, e.g. "Bearer ".')


HeaderValue = str | HeaderSecret
REDACT_MIN_CHARS = 4  # shorter values ("1", "on") would only blank out ordinary words
_TOKEN_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")  # RFC 9110 field values, minus obs-text (httpx sends ASCII)
#: Headers the dispatcher sets itself; a destination cannot replace them.
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "transfer-encoding", "host",
     "connection", "content-type"}
)  # fmt: skip


class CircuitBreakerConfig(Strict):
    failure_threshold_percent: float = Field(70.0, gt=0, le=100, description="Failure rate that trips.")
    minimum_requests: int = Field(10, ge=1, description="Requests in the window before the rate counts.")
    consecutive_failures: int = Field(10, ge=1, description="Failures in a row that trip regardless.")
    window_seconds: float = Field(300.0, gt=0, description="Observation window.")
    open_seconds: float = Field(30.0, gt=0, description="How long the circuit stays open before a probe.")

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(**self.model_dump())


class DestinationBase(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    timeout_seconds: float | None = Field(None, gt=0, description="Whole-request bound; default: settings.")
    max_concurrency: int = Field(32, ge=1, le=10_000, description="Requests in flight to it at once.")
    max_waiting: int | None = Field(
        None,
        ge=0,
        description="Records allowed to wait for a free slot (each holds one of the runtime's in-flight slots); "
        "more go to a retry tier at once. Default: 8 x max_concurrency.",
    )
    rate_limit_per_second: float | None = Field(None, gt=0, description="Token bucket rate; none: unlimited.")
    rate_limit_burst: int | None = Field(None, ge=1, description="Token bucket size; default: the rate.")
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    allow_private: bool = Field(
        False, description="Allow private and loopback addresses (demo and test sinks); metadata stays refused."
    )

    def secrets(self) -> list[str]:
        """Every value of this destination that must never leave the process in text."""
        return []

    def redact(self, text: str, limit: int | None = None) -> str:
        """`text` with every secret of this destination replaced by [redacted]; with `limit`, cut to that
        many characters first redacting, then also redacting a secret's start left at the cut."""
        secrets = [s for s in sorted(self.secrets(), key=len, reverse=True) if len(s) >= REDACT_MIN_CHARS]
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
        if limit is None or len(text) <= limit:
            return text
        text = text[:limit]
        for secret in secrets:
            cut = next((k for k in range(len(secret) - 1, REDACT_MIN_CHARS - 1, -1) if text.endswith(secret[:k])), 0)
            if cut:
                return text[:-cut] + "[redacted]"
        return text


class UrlDestination(DestinationBase):
    url: str | None = Field(None, pattern=r"^https?://", description="The endpoint, when it is not secret.")
    url_secret: SecretRef | None = Field(None, description="The endpoint, when the URL is the secret.")
    _url: str = PrivateAttr("")

    @model_validator(mode="after")
    def _one_url(self) -> UrlDestination:
        if (self.url is None) == (self.url_secret is None):
            raise ValueError("a destination needs exactly one of url, url_secret")
        return self

    @property
    def endpoint(self) -> str:
        return self._url

    def secrets(self) -> list[str]:
        """A secret URL, and its path (the secret part of a Slack webhook URL)."""
        if self.url_secret is None:
            return []
        path = "/" + self._url.split("://", 1)[-1].partition("/")[2]
        return [self._url, path]


class HttpDestination(UrlDestination):
    kind: Literal["http"]
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        description="Extra headers: a literal value, or {secret_env|secret_file, prefix} for a credential.",
    )
    signing_secrets: list[SecretRef] = Field(default_factory=list, description="whsec_ secrets, newest first.")
    _signer: Signer | None = PrivateAttr(None)
    _header_values: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def signer(self) -> Signer | None:
        return self._signer

    @property
    def header_values(self) -> dict[str, str]:
        """The headers to send, secrets revealed (checked at load: token names, printable values)."""
        return self._header_values

    def secrets(self) -> list[str]:
        """Header values count as secrets, with and without their prefix (`Bearer `): a receiver
        echoing our request, or a client library quoting a header, must not put them in an error."""
        values = list(self._header_values.values())
        for name, ref in self.headers.items():
            if isinstance(ref, HeaderSecret) and ref.prefix:
                values.append(self._header_values[name].removeprefix(ref.prefix))
        return [*super().secrets(), *values]


class SlackDestination(UrlDestination):
    kind: Literal["slack"]


class SmtpDestination(DestinationBase):
    kind: Literal["smtp"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = Field(True, description="Upgrade with STARTTLS (required when the server offers it).")
    implicit_tls: bool = Field(False, description="TLS from the first byte (port 465).")
    ca_file: Path | None = Field(None, description="CA bundle to verify the server with; default: system.")
    from_address: str = Field(description="The From: of every email sent through it.")
    _password: str | None = PrivateAttr(None)

    @property
    def password_value(self) -> str | None:
        return self._password

    def secrets(self) -> list[str]:
        return [self._password] if self._password else []


AnyDestination = HttpDestination | SlackDestination | SmtpDestination
KINDS = ("http", "slack", "smtp")
Destination = Annotated[AnyDestination, Field(discriminator="kind")]


class DestinationsFile(Strict):
    destinations: list[Destination] = Field(default_factory=list)


def parse(text: str | bytes, environ: Mapping[str, str], source: str = "<destinations>") -> dict[str, AnyDestination]:
    """Validate the file's text and resolve every secret; keyed by destination name.

    Every problem is reported as `file:line: path: message`; no value from the file or the environment
    is echoed (a ${VAR}-substituted URL may be a secret).
    """
    tree = yaml_mapping(text, source, "destinations")
    issues: list[tuple[Loc, str]] = []
    data = substituted(tree, environ, issues)
    parsed: DestinationsFile | None = None
    try:
        parsed = DestinationsFile.model_validate(data)
    except ValidationError as exc:
        issues += validation_issues(exc, KINDS)
    out: dict[str, AnyDestination] = {}
    for i, dest in enumerate(parsed.destinations if parsed is not None and not issues else ()):
        try:
            if dest.name in out:
                raise _FieldProblem("name", f"destination {dest.name!r} is defined twice")
            _resolve(dest, environ)
        except _FieldProblem as problem:
            field = problem.field if isinstance(problem.field, tuple) else (problem.field,)
            issues.append((("destinations", i, *field), problem.message))
        out[dest.name] = dest
    raise_for(issues, tree, source)
    return out


class _FieldProblem(Exception):
    def __init__(self, field: str | tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _resolve(dest: AnyDestination, environ: Mapping[str, str]) -> None:
    if isinstance(dest, UrlDestination):
        field = "url_secret" if dest.url_secret else "url"
        url = _reveal(dest.url_secret, environ, dest.name, field) if dest.url_secret else dest.url
        if not url or not url.startswith(("http://", "https://")):
            raise _FieldProblem(field, "the URL must start with http:// or https://")
        dest._url = url
    if isinstance(dest, HttpDestination):
        dest._header_values = {name: _header(name, value, environ, dest.name) for name, value in dest.headers.items()}
    if isinstance(dest, HttpDestination) and dest.signing_secrets:
        secrets = [_reveal(s, environ, dest.name, "signing_secrets") for s in dest.signing_secrets]
        try:
            dest._signer = Signer(secrets)
        except ValueError as exc:
            raise _FieldProblem("signing_secrets", str(exc)) from None
    if isinstance(dest, SmtpDestination) and dest.password is not None:
        dest._password = _reveal(dest.password, environ, dest.name, "password")


def _header(name: str, value: HeaderValue, environ: Mapping[str, str], owner: str) -> str:
    field = ("headers", name)
    if not _TOKEN_NAME.fullmatch(name):
        raise _FieldProblem(field, "a header name is letters, digits and !#$%&'*+.^_`|~- only")
    if name.lower() in RESERVED_HEADERS:
        raise _FieldProblem(field, f"{name} is set by the dispatcher itself")
    if isinstance(value, HeaderSecret):
        text = value.prefix + _reveal(value, environ, owner, field)
        origin = f"the secret {value.secret_env or value.secret_file}"
    else:
        text, origin = value, "the file (after ${VAR} substitution)"
    if not _PRINTABLE.fullmatch(text):
        # never the value: it may be a credential, and its tail is what an error would show
        raise _FieldProblem(
            field, f"the value from {origin} contains a line break, control character or non-ASCII character"
        )
    return text


def _reveal(ref: SecretRef, environ: Mapping[str, str], owner: str, field: str | tuple[str, ...]) -> str:
    try:
        return ref.reveal(environ, owner)
    except ConfigError as exc:
        raise _FieldProblem(field, str(exc)) from None


def load(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, AnyDestination]:
    text = read_bytes(path, "destinations file")  # decoded by the YAML reader, which locates non-UTF-8 bytes
    return parse(text, os.environ if environ is None else environ, str(path))
