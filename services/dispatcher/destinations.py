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
        rate_limit_per_second: 20             # for the whole dispatcher group, however many replicas
      - name: cases
        kind: http
        url: https://api.crm.example.com/v2        # origin and path prefix of every http action to it
        auth:                                   # bearer | basic | oauth2_client_credentials
          type: oauth2_client_credentials
          token_url: https://login.crm.example.com/oauth/token
          client_id: postcall
          client_secret: {secret_env: CRM_CLIENT_SECRET}
          scope: cases.write

`${VAR}` and `${VAR:-default}` in the file's values are replaced from the environment. Secrets
are never in the file itself: a SecretRef names an environment variable or a file (a mounted Secret),
read once at start; a missing secret fails the start, not the first delivery. Action records only name
a destination.

A header name must be an HTTP token and a header value printable ASCII: a CR, LF or other control
character (a token file ending in a newline inside a `${VAR}`, say), or a space or tab at either end
(which h11 will not send), is refused at load, naming the header and where its value came from, never
the value. A user:password in a URL beside a credential the destination sends itself (`auth:`, an
`authorization` header, a bot token) is refused too: httpx sends it as `Authorization: Basic` in place
of that credential. Every header value and a secret URL are
treated as secrets afterwards: `Registry.redact` scrubs them from any text that leaves the process
(errors, results, dead letters, logs), even text a receiver echoed back.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote_plus, urlsplit

import httpx
from google.auth import crypt
from google.oauth2 import service_account
from pydantic import ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, field_validator, model_validator

from schemas.agent_checks import Loc
from schemas.agent_loader import Problem
from schemas.config_yaml import misspelt_tag
from services.common.breaker import BreakerPolicy
from services.common.config import (
    HEADER_NAME,
    ConfigError,
    SecretRef,
    Strict,
    error_message,
    raise_for,
    read_bytes,
    substitute_env,
    substituted,
    yaml_mapping,
)
from services.common.errors import redact
from services.common.ssrf import UrlRefused, checked_http_url
from services.dispatcher.settings import AttemptBound
from services.dispatcher.signing import Signer

__all__ = ["ConfigError", "SecretRef", "load", "parse", "substitute_env"]


class HeaderSecret(SecretRef):
    prefix: str = Field("", description='Text before the secret, e.g. "Bearer ".')


HeaderValue = str | HeaderSecret
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")  # RFC 9110 field values, minus obs-text (httpx sends ASCII)
#: Headers the dispatcher sets itself; a destination cannot replace them.
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "transfer-encoding", "host",
     "connection", "content-type"}
)  # fmt: skip


class CircuitBreakerConfig(Strict):
    model_config = ConfigDict(allow_inf_nan=False)  # YAML's .inf passes gt=0
    failure_threshold_percent: float = Field(70.0, gt=0, le=100, description="Failure rate that trips.")
    minimum_requests: int = Field(10, ge=1, description="Requests in the window before the rate counts.")
    consecutive_failures: int = Field(10, ge=1, description="Failures in a row that trip regardless.")
    window_seconds: float = Field(300.0, gt=0, description="Observation window.")
    open_seconds: float = Field(30.0, gt=0, description="How long the circuit stays open before a probe.")

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(**self.model_dump())


class DestinationBase(Strict):
    # YAML's .inf passes gt=0: a timeout of no deadline; a rate whose burst round() cannot make
    model_config = ConfigDict(allow_inf_nan=False)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    timeout_seconds: float | None = Field(
        None,
        gt=0,
        description="Whole-attempt bound (a token fetch and every request of the attempt, or the SMTP session); "
        "default: settings. Over the dispatcher's attempt bound (settings.AttemptBound, 104 s with the defaults) "
        "it is refused at start.",
    )
    max_concurrency: int = Field(32, ge=1, le=10_000, description="Requests in flight to it at once.")
    max_waiting: int | None = Field(
        None,
        ge=0,
        description="Records allowed to wait (at most max_wait_seconds each) for a free slot; each holds one of "
        "the runtime's in-flight slots. More wait in line while the destination drains this room quickly (the "
        "dispatcher takes no new records meanwhile), else go to a retry tier at once. Default: 4 x max_concurrency.",
    )
    rate_limit_per_second: float | None = Field(
        None,
        gt=0,
        description="Token bucket rate of the whole dispatcher group (shared among its replicas); none: unlimited.",
    )
    rate_limit_burst: int | None = Field(None, ge=1, description="Token bucket size; default: the rate.")
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    allow_private: bool = Field(
        False, description="Allow private and loopback addresses (demo and test sinks); metadata stays refused."
    )

    def secrets(self) -> list[str]:
        """Every value of this destination that must never leave the process in text."""
        return []

    def redact(self, text: str, limit: int | None = None) -> str:
        """`text` with every secret of this destination replaced by [redacted] (services.common.errors.redact)."""
        return redact(text, self.secrets(), limit)


class BearerAuth(Strict):
    type: Literal["bearer"]
    token: SecretRef = Field(description="The token; sent as `Authorization: Bearer <token>`.")


class BasicAuth(Strict):
    type: Literal["basic"]
    username: str | SecretRef = Field(description="The user name (Zendesk: `agent@example.com/token`).")
    password: SecretRef = Field(description="The password or API token.")


class ClientCredentialsAuth(Strict):
    """OAuth 2.0 client credentials (RFC 6749 4.4): a token is fetched from `token_url`, cached until it
    expires, and fetched again once when the API answers 401."""

    type: Literal["oauth2_client_credentials"]
    token_url: str = Field(pattern=r"^https?://", description="The authorization server's token endpoint.")
    client_id: str | SecretRef
    client_secret: SecretRef
    scope: str | None = Field(None, description="Space-separated scopes to ask for.")
    audience: str | None = Field(None, description="`audience` parameter (Auth0 and others ask for one).")
    client_auth: Literal["basic", "body"] = Field(
        "basic", description="basic: HTTP Basic (RFC 6749's default); body: client_id/client_secret in the form."
    )


Auth = Annotated[BearerAuth | BasicAuth | ClientCredentialsAuth, Field(discriminator="type")]
AUTH_TYPES = ("bearer", "basic", "oauth2_client_credentials")


class UrlDestination(DestinationBase):
    url: str | None = Field(None, pattern=r"^https?://", description="The endpoint, when it is not secret.")
    url_secret: SecretRef | None = Field(None, description="The endpoint, when the URL is the secret.")
    _url: str = PrivateAttr("")
    _login: list[str] = PrivateAttr(default_factory=list)  # the URL's user:password as httpx sends it

    @model_validator(mode="after")
    def _one_url(self) -> UrlDestination:
        if (self.url is None) == (self.url_secret is None):
            raise ValueError("a destination needs exactly one of url, url_secret")
        return self

    @property
    def endpoint(self) -> str:
        return self._url

    def secrets(self) -> list[str]:
        """A password in the URL, as written and as the `Authorization: Basic` value httpx sends for it; a
        secret URL, its path (the secret part of a Slack webhook URL) and its query's values (an Azure
        Functions `code=` key: an http action's own path goes before that query, so the URL it sends
        holds neither of the others)."""
        if self.url_secret is None:
            return self._login
        path = "/" + self._url.split("://", 1)[-1].partition("/")[2]
        query = urlsplit(self._url).query
        values = [v for _, v in parse_qsl(query)] + [v for _, _, v in (p.partition("=") for p in query.split("&"))]
        return [self._url, path, *(v for v in dict.fromkeys(values) if v), *self._login]


class HttpDestination(UrlDestination):
    kind: Literal["http"]
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        description="Extra headers: a literal value, or {secret_env|secret_file, prefix} for a credential.",
    )
    signing_secrets: list[SecretRef] = Field(default_factory=list, description="whsec_ secrets, newest first.")
    auth: Auth | None = Field(
        None, description="How requests authenticate: bearer, basic or OAuth2 client credentials."
    )
    _signer: Signer | None = PrivateAttr(None)
    _header_values: dict[str, str] = PrivateAttr(default_factory=dict)
    _credentials: list[str] = PrivateAttr(default_factory=list)  # auth's secrets, for redaction
    _client: tuple[str, str] | None = PrivateAttr(None)  # OAuth2 client id and secret, revealed

    @model_validator(mode="after")
    def _one_credential(self) -> HttpDestination:
        if self.auth is not None and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("set the credential once: `auth:` or an `authorization` header, not both")
        return self

    @property
    def client(self) -> tuple[str, str] | None:
        """The OAuth2 client id and secret (auth: oauth2_client_credentials), revealed at load."""
        return self._client

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
        values = [*self._header_values.values(), *self._credentials]
        for name, ref in self.headers.items():
            if isinstance(ref, HeaderSecret) and ref.prefix:
                values.append(self._header_values[name].removeprefix(ref.prefix))
        return [*super().secrets(), *values]


SLACK_API = "https://slack.com/api"


class SlackDestination(UrlDestination):
    """An incoming webhook (`url_secret`: the URL is the secret), or a bot token for chat.postMessage
    (`bot_token`; `url` is then the Web API's base, https://slack.com/api unless a test says otherwise)."""

    kind: Literal["slack"]
    bot_token: SecretRef | None = Field(None, description="A bot token (xoxb-...) for chat.postMessage.")
    channel: str | None = Field(
        None, pattern=r"^[#@]?[A-Za-z0-9][A-Za-z0-9._-]{0,79}$", description="Bot token: the default channel."
    )
    _bot_token: str | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _web_api_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("bot_token") is not None and "url" not in data:
            return {**data, "url": SLACK_API} if "url_secret" not in data else data
        return data

    @model_validator(mode="after")
    def _channel_needs_a_bot(self) -> SlackDestination:
        if self.channel is not None and self.bot_token is None:
            raise ValueError("`channel` is for bot tokens: an incoming webhook posts to the channel it was made for")
        return self

    @property
    def token(self) -> str | None:
        """The bot token, revealed at load; None for an incoming webhook."""
        return self._bot_token

    def secrets(self) -> list[str]:
        return [*super().secrets(), self._bot_token] if self._bot_token else super().secrets()


class TeamsDestination(UrlDestination):
    """A Microsoft Teams incoming webhook (a Workflows or connector URL; usually `url_secret`)."""

    kind: Literal["teams"]


SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets"


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's JSON key, read at load: who signs, where tokens come from, and the
    signer (google-auth) holding the private key."""

    email: str
    token_uri: str
    key_id: str | None
    signer: crypt.Signer
    private_key: str


class GoogleSheetsDestination(UrlDestination):
    """The Google Sheets REST API (v4) as a service account; `url` is the API's origin (a test points it
    at a local server)."""

    kind: Literal["google_sheets"]
    url: str | None = Field("https://sheets.googleapis.com", pattern=r"^https?://", description="The API's origin.")
    service_account: SecretRef = Field(description="The service account's JSON key file (a mounted Secret).")
    token_url: str | None = Field(
        None, pattern=r"^https?://", description="Where to exchange the signed JWT; default: the key's token_uri."
    )
    scopes: list[str] = Field(default_factory=lambda: [SHEETS_SCOPE], min_length=1)
    # Google's write quota is about one request per second per user; each attempt may read a long id column
    max_concurrency: int = Field(4, ge=1, le=100, description="Requests in flight to it at once.")
    _account: ServiceAccountKey | None = PrivateAttr(None)

    @property
    def account(self) -> ServiceAccountKey:
        assert self._account is not None, "resolved at load"
        return self._account

    def secrets(self) -> list[str]:
        return [*super().secrets(), self._account.private_key] if self._account else super().secrets()


_ONE_SENDER = 'from_address must be one address: calls@example.com or "Name <calls@example.com>"'


class SmtpDestination(DestinationBase):
    """An SMTP server. What would fail every email at send time is refused at load instead: a From: that
    is not one address (or has a line break, a ${VAR} ending in a newline), a host that is no host name,
    a password without a user name (aiosmtplib then sends no AUTH), a CA bundle that cannot be read. A
    password with neither starttls nor implicit_tls (sent in clear text) is refused too, unless the host is
    a loopback address (a local relay or test server) or allow_plaintext_login says so."""

    kind: Literal["smtp"]
    host: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,253}$", description="The server's host name or IP address.")
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = Field(True, description="Upgrade with STARTTLS; an error when the server does not offer it.")
    implicit_tls: bool = Field(False, description="TLS from the first byte (port 465).")
    allow_plaintext_login: bool = Field(
        False,
        description="Send the password with neither starttls nor implicit_tls, in clear text: a relay on a "
        "network you trust that offers no TLS. Not needed for a relay on a loopback address.",
    )
    ca_file: Path | None = Field(None, description="CA bundle to verify the server with; default: system.")
    from_address: str = Field(description="The From: of every email sent through it: one address, with a name or not.")
    auto_submitted: bool = Field(
        False,
        description="Mark every email as sent by a machine (Auto-Submitted: auto-generated, RFC 3834; "
        "X-Auto-Response-Suppress: All), so out-of-office replies are not sent back to from_address. Not for "
        "a help desk's inbox: Zendesk suspends such mail and Jira Service Management rejects it, so no ticket "
        "is made although the server took the message (the action is delivered).",
    )
    _password: str | None = PrivateAttr(None)
    _tls: ssl.SSLContext | None = PrivateAttr(None)

    @field_validator("from_address")
    @classmethod
    def _one_sender(cls, value: str) -> str:
        message = EmailMessage()  # the header exactly as build_message sets it
        try:
            message["From"] = value
        except ValueError:
            raise ValueError("from_address has a line break") from None
        except IndexError:  # CPython's parser on 'a@' (3.11)
            raise ValueError(_ONE_SENDER) from None
        header = message["From"]
        found = header.addresses
        if header.defects or len(found) != 1 or not found[0].username or not found[0].domain:
            raise ValueError(_ONE_SENDER)
        return value

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpDestination:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username (without one no AUTH is sent)")
        return self

    @property
    def password_value(self) -> str | None:
        return self._password

    @property
    def tls_context(self) -> ssl.SSLContext:
        """Verifies the server with `ca_file` (read at load) or the system's CAs."""
        if self._tls is None:
            assert self.ca_file is None, "resolved at load"
            self._tls = ssl.create_default_context()
        return self._tls

    def secrets(self) -> list[str]:
        """The password, and the base64 forms AUTH sends it in (LOGIN: the password alone; PLAIN:
        NUL, user, NUL, password), which a server may quote back in its error."""
        if not self._password:
            return []
        encoded = (self._password, f"\0{self.username or ''}\0{self._password}")
        return [self._password, *(base64.b64encode(text.encode()).decode() for text in encoded)]


AnyDestination = HttpDestination | SlackDestination | TeamsDestination | GoogleSheetsDestination | SmtpDestination
KINDS = ("http", "slack", "teams", "google_sheets", "smtp")
Destination = Annotated[AnyDestination, Field(discriminator="kind")]


class DestinationsFile(Strict):
    destinations: list[Destination] = Field(default_factory=list)


def parse(
    text: str | bytes,
    environ: Mapping[str, str],
    source: str = "<destinations>",
    *,
    reveal: bool = True,
    attempt_bound: AttemptBound | None = None,
) -> dict[str, AnyDestination]:
    """Validate the file's text and resolve every secret; keyed by destination name.

    Every problem is reported as `file:line: path: message`; no value from the file or the environment
    is echoed (a ${VAR}-substituted URL may be a secret). With `reveal=False` (`postcall config
    validate`) no secret is read, and a value from an unset ${VAR} is not judged. With `attempt_bound` (the
    dispatcher's settings.attempt_bound), a destination's timeout_seconds over it is refused, whatever its kind.
    """
    tree = yaml_mapping(text, source, "destinations")
    issues: list[tuple[Loc, str]] = []
    data = substituted(tree, environ, issues)
    unset = [loc for loc, _ in issues]
    issues = issues if reveal else []
    try:
        entries = list(enumerate(DestinationsFile.model_validate(data).destinations))
    except ValidationError as exc:
        found = _validation_issues(exc)
        issues += [(loc, m) for loc, m in found if reveal or not any(loc[: len(u)] == u for u in unset)]
        entries = _valid_entries(data)  # checked further, so that one run reports every entry's problems
    out: dict[str, AnyDestination] = {}
    for i, dest in entries:
        if any(loc[:2] == ("destinations", i) for loc in unset):
            continue  # a value of it is unknown: reported above, or not judged (reveal=False)
        try:
            if dest.name in out:
                raise _FieldProblem("name", f"destination {dest.name!r} is defined twice")
            _check_timeout(dest, attempt_bound)
            if reveal:
                _resolve(dest, environ)
            else:
                _check_unrevealed(dest, environ)
        except _FieldProblem as problem:
            field = problem.field if isinstance(problem.field, tuple) else (problem.field,)
            issues.append((("destinations", i, *field), problem.message))
        out[dest.name] = dest
    raise_for(issues, tree, source)
    return out


_ENTRY: TypeAdapter[AnyDestination] = TypeAdapter(Destination)


def _valid_entries(data: Any) -> list[tuple[int, AnyDestination]]:
    """(index, destination) for each entry that is valid on its own."""
    entries = data.get("destinations") if isinstance(data, dict) else None
    out: list[tuple[int, AnyDestination]] = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        with contextlib.suppress(ValidationError):  # its problems are reported already
            out.append((i, _ENTRY.validate_python(entry)))
    return out


def _validation_issues(exc: ValidationError) -> list[tuple[Loc, str]]:
    """pydantic's errors without the union tags in their paths (`destinations[0].auth.token_url`, not
    `...http.auth.bearer.token_url`), an unknown tag listing the tags of its own union."""
    out: list[tuple[Loc, str]] = []
    for error in exc.errors():  # the input for misspelt_tag, which reads a mapping's keys only
        loc = list(error["loc"])
        if len(loc) > 2 and loc[2] in KINDS:
            del loc[2]
        in_auth = len(loc) > 2 and loc[2] == "auth"
        if in_auth and len(loc) > 3 and loc[3] in AUTH_TYPES:
            del loc[3]
        typo = misspelt_tag(error)
        message = typo[1] if typo else error_message(error, AUTH_TYPES if in_auth else KINDS, DestinationsFile)
        out.append(((*loc, typo[0]) if typo else tuple(loc), message))
    return _text_or_reference(out, exc)


TEXT_OR_REFERENCE = "expected a text, or a secret by reference: {secret_env: NAME} or {secret_file: PATH}"


def _text_or_reference(issues: list[tuple[Loc, str]], exc: ValidationError) -> list[tuple[Loc, str]]:
    """A value that may be a text or a SecretRef (a header, auth's client_id and username) fails under
    both members, each tag in the path: a mapping was meant as the reference, so only its problems are
    reported (`...headers.authorization.prefx: unknown field`), and anything else is neither, once."""
    out: list[tuple[Loc, str]] = []
    referenced: set[Loc] = set()  # values given as a mapping
    neither: set[Loc] = set()
    for (loc, message), error in zip(issues, exc.errors(include_input=False), strict=True):
        at = next(
            (i for i, part in enumerate(loc) if isinstance(part, str) and part.startswith("function-after[")), None
        )
        if error["type"] == "string_type" and loc[-1] == "str":
            neither.add(loc[:-1])  # the text member's complaint: beside the point when a mapping was given
        elif at is None:
            out.append((loc, message))
        elif error["type"] == "model_type":
            neither.add(loc[:at])
        else:
            referenced.add(loc[:at])
            out.append(((*loc[:at], *loc[at + 1 :]), message))
    return out + [(loc, TEXT_OR_REFERENCE) for loc in sorted(neither - referenced, key=str)]


def check(
    path: Path, environ: Mapping[str, str] | None = None, attempt_bound: AttemptBound | None = None
) -> tuple[Problem, ...]:
    """Every problem of a destinations file that can be seen without its secrets, located; with
    `attempt_bound`, a timeout_seconds over it too."""
    environ = os.environ if environ is None else environ
    try:
        parse(read_bytes(path, "destinations file"), environ, str(path), reveal=False, attempt_bound=attempt_bound)
    except ConfigError as exc:
        return exc.problems or (Problem(str(path), 0, "", str(exc)),)
    return ()


class _FieldProblem(Exception):
    def __init__(self, field: str | tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _check_timeout(dest: AnyDestination, bound: AttemptBound | None) -> None:
    """Refused, not clamped: the file says how long a receiver or relay may take, and a shorter bound than
    written would give up on one the operator expected to wait for (a clamp logged once is easily missed)."""
    refused = None if bound is None or dest.timeout_seconds is None else bound.refusal(dest.timeout_seconds)
    if refused is not None:
        raise _FieldProblem("timeout_seconds", refused)


def _resolve(dest: AnyDestination, environ: Mapping[str, str]) -> None:
    if isinstance(dest, UrlDestination):
        field = "url_secret" if dest.url_secret else "url"
        url = _reveal(dest.url_secret, environ, dest.name, field) if dest.url_secret else dest.url
        dest._url = _checked_url(url or "", field, _login_refused(dest))
        dest._login = _login(dest._url)
    _check_token_url(dest)
    _check_plain_login(dest)
    if isinstance(dest, HttpDestination):
        _one_name_each(dest.headers)
        dest._header_values = {name: _header(name, value, environ, dest.name) for name, value in dest.headers.items()}
        _resolve_auth(dest, environ)
    if isinstance(dest, HttpDestination) and dest.signing_secrets:
        secrets = [_reveal(s, environ, dest.name, "signing_secrets") for s in dest.signing_secrets]
        try:
            dest._signer = Signer(secrets)
        except ValueError as exc:
            raise _FieldProblem("signing_secrets", str(exc)) from None
    if isinstance(dest, GoogleSheetsDestination):
        dest._account = _service_account(dest, environ)
    if isinstance(dest, SlackDestination) and dest.bot_token is not None:
        dest._bot_token = _credential(dest.bot_token, environ, dest.name, ("bot_token",))
    if isinstance(dest, SmtpDestination) and dest.password is not None:
        dest._password = _reveal(dest.password, environ, dest.name, "password")
    if isinstance(dest, SmtpDestination) and dest.ca_file is not None:
        dest._tls = _ca_context(dest.ca_file)


def _login(url: str) -> list[str]:
    """The password of a URL's user:password (as written, and decoded) and the Basic credential httpx
    sends for it (httpx.BasicAuth: base64 of the decoded user:password in UTF-8). A user name with no
    password is the credential itself (an API key sent as `key:`, curl's `-u key:`), so it is the secret."""
    parsed = httpx.URL(url)
    if not parsed.password and not parsed.username:
        return []
    user_written, _, password_written = parsed.userinfo.decode("ascii").partition(":")
    basic = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode()
    if not parsed.password:
        return list(dict.fromkeys([user_written, parsed.username, basic]))
    return list(dict.fromkeys([password_written, parsed.password, basic]))


def _ca_context(ca_file: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError:
        raise _FieldProblem("ca_file", f"{ca_file} is not a PEM bundle of CA certificates") from None
    except OSError as exc:
        raise _FieldProblem("ca_file", f"cannot read {ca_file}: {exc.strerror or exc}") from None


def _check_unrevealed(dest: AnyDestination, environ: Mapping[str, str]) -> None:
    """What can be judged without reading a secret (`postcall config validate`)."""
    if isinstance(dest, UrlDestination) and dest.url is not None:
        _checked_url(dest.url, "url", _login_refused(dest))
    _check_token_url(dest)
    _check_plain_login(dest)
    if isinstance(dest, HttpDestination):
        _one_name_each(dest.headers)
        for name, value in dest.headers.items():
            _header(name, value if isinstance(value, str) else "", environ, dest.name)


def _check_token_url(dest: AnyDestination) -> None:
    if isinstance(dest, HttpDestination) and isinstance(dest.auth, ClientCredentialsAuth):
        own = _TWO_LOGINS.format(own="the client id and secret") if dest.auth.client_auth == "basic" else None
        _checked_url(dest.auth.token_url, ("auth", "token_url"), own)
    if isinstance(dest, GoogleSheetsDestination) and dest.token_url is not None:
        _checked_url(dest.token_url, "token_url")


_TWO_LOGINS = (
    "the URL has a user name or password, which httpx sends as `Authorization: Basic` in place of {own}: "
    "set the credential once"
)


def _login_refused(dest: UrlDestination) -> str | None:
    """Why a user:password in the destination's URL is refused, if it is: httpx turns it into an
    Authorization header that replaces the one we set, so the destination's own credential would never be sent."""
    own = None
    if isinstance(dest, HttpDestination) and dest.auth is not None:
        own = f"the `auth: {dest.auth.type}` credential"
    elif isinstance(dest, HttpDestination) and any(name.lower() == "authorization" for name in dest.headers):
        own = "the authorization header"
    elif isinstance(dest, SlackDestination) and dest.bot_token is not None:
        own = "the bot token"
    elif isinstance(dest, GoogleSheetsDestination):
        own = "the service account's token"
    return None if own is None else _TWO_LOGINS.format(own=own)


def _check_plain_login(dest: AnyDestination) -> None:
    """A password goes to an smtp server only over TLS, or to one on this host's loopback."""
    if not isinstance(dest, SmtpDestination) or dest.password is None or dest.starttls or dest.implicit_tls:
        return
    if dest.allow_plaintext_login:
        return
    host = dest.host.lower().rstrip(".")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host != "localhost" and not host.endswith(".localhost"):
        raise _FieldProblem(
            "password", "the password would be sent in clear text: set starttls or implicit_tls to true (a "
            "server on a loopback address, a local relay, may go without TLS; for a relay on a network you "
            "trust that offers no TLS, set allow_plaintext_login: true)",
        )  # fmt: skip


def _checked_url(url: str, field: str | tuple[str, ...], login_refused: str | None = None) -> str:
    """`url` when httpx can send to it; else a problem that never quotes it (it may be the secret)."""
    try:
        checked_http_url(url, login_refused=login_refused)
    except UrlRefused as exc:
        raise _FieldProblem(field, str(exc)) from None
    return url


def _resolve_auth(dest: HttpDestination, environ: Mapping[str, str]) -> None:
    auth = dest.auth
    if isinstance(auth, BearerAuth):
        token = _credential(auth.token, environ, dest.name, ("auth", "token"))
        dest._header_values["authorization"] = f"Bearer {token}"
        dest._credentials = [token]
    elif isinstance(auth, BasicAuth):
        user = _credential(auth.username, environ, dest.name, ("auth", "username"))
        password = _credential(auth.password, environ, dest.name, ("auth", "password"))
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        dest._header_values["authorization"] = f"Basic {pair}"
        dest._credentials = [password, pair]
    elif isinstance(auth, ClientCredentialsAuth):
        client_id = _credential(auth.client_id, environ, dest.name, ("auth", "client_id"))
        secret = _credential(auth.client_secret, environ, dest.name, ("auth", "client_secret"))
        dest._client = (client_id, secret)
        basic = client_basic(client_id, secret)
        dest._credentials = [secret, basic]


def client_basic(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: the client id and secret, each form-encoded, as HTTP Basic credentials."""
    return base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def _credential(value: str | SecretRef, environ: Mapping[str, str], owner: str, field: tuple[str, ...]) -> str:
    """A credential from the file or by reference; printable ASCII (it goes into a header or a form)."""
    text = value if isinstance(value, str) else _reveal(value, environ, owner, field)
    if not _PRINTABLE.fullmatch(text) or not text:
        where = "the file" if isinstance(value, str) else f"the secret {value.secret_env or value.secret_file}"
        raise _FieldProblem(
            field, f"the value from {where} is empty or has a line break, control or non-ASCII character"
        )
    return text


def _service_account(dest: GoogleSheetsDestination, environ: Mapping[str, str]) -> ServiceAccountKey:
    """The key, checked by google-auth; a problem names the missing part, never a value of the key."""
    text = _reveal(dest.service_account, environ, dest.name, "service_account")
    try:
        info = json.loads(text)
    except ValueError:
        raise _FieldProblem("service_account", "the secret is not a JSON service account key") from None
    if not isinstance(info, dict) or info.get("type", "service_account") != "service_account":
        raise _FieldProblem("service_account", 'the secret is not a key of "type": "service_account"')
    try:
        credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except (ValueError, KeyError, TypeError) as exc:
        missing = f" (missing {exc})" if isinstance(exc, KeyError) else ""
        raise _FieldProblem("service_account", f"google-auth cannot read the service account key{missing}") from None
    token_uri = dest.token_url or info.get("token_uri")
    if not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://")):
        raise _FieldProblem("service_account", "the key has no http(s) token_uri (or set token_url)")
    key_id = info.get("private_key_id")
    return ServiceAccountKey(
        credentials.service_account_email, token_uri, key_id if isinstance(key_id, str) else None,
        credentials.signer, str(info.get("private_key", "")),
    )  # fmt: skip


def _one_name_each(headers: Mapping[str, HeaderValue]) -> None:
    seen: set[str] = set()
    for name in headers:
        if name.lower() in seen:
            raise _FieldProblem(("headers", name), f"{name.lower()} is set twice (header names ignore case)")
        seen.add(name.lower())


def _header(name: str, value: HeaderValue, environ: Mapping[str, str], owner: str) -> str:
    field = ("headers", name)
    if not HEADER_NAME.fullmatch(name):
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
    if text != text.strip(" \t"):  # h11 refuses to send it: every delivery would fail
        raise _FieldProblem(
            field, f"the value from {origin} begins or ends with a space or tab, which HTTP cannot send"
        )
    return text


def _reveal(ref: SecretRef, environ: Mapping[str, str], owner: str, field: str | tuple[str, ...]) -> str:
    try:
        return ref.reveal(environ, owner)
    except ConfigError as exc:
        raise _FieldProblem(field, str(exc)) from None


def load(
    path: Path, environ: Mapping[str, str] | None = None, *, attempt_bound: AttemptBound | None = None
) -> dict[str, AnyDestination]:
    text = read_bytes(path, "destinations file")  # decoded by the YAML reader, which locates non-UTF-8 bytes
    return parse(text, os.environ if environ is None else environ, str(path), attempt_bound=attempt_bound)
