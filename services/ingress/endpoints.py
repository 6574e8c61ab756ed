"""The endpoints file: one webhook endpoint per platform account, with the account it publishes for.

    endpoints:
      - name: acme                     # POST /webhooks/vapi/acme
        platform: vapi                 # vapi | retell | elevenlabs | native
        account: {id: acme, name: Acme Corp}
        secrets:                       # one or two: current first, the previous one while rotating
          - {secret_env: ACME_VAPI_SECRET}
          - {secret_file: /var/run/secrets/acme/vapi-previous}
        auth: hmac                     # vapi: hmac | bearer | x-vapi-secret
        hmac: {signature_header: x-signature, timestamp_header: x-timestamp}

The account a request belongs to is the endpoint's, never the payload's: a leaked Vapi org id or a
forged `account` field cannot publish into another tenant. Nor can a payload's agent: an agent that only
another account's endpoints list (in `agents` or as `default_agent_id`) is refused, so one tenant's signed
payload cannot run another tenant's flows, destinations and credentials. Secrets are read once at start (a missing
one fails the start) and never logged. `${VAR}` and `${VAR:-default}` are replaced from the environment.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.events import MAX_ID_LENGTH
from services.common.config import (
    ConfigError,
    HeaderName,
    SecretRef,
    Strict,
    raise_for,
    read_bytes,
    validated,
)
from services.ingress.signatures import (
    ElevenLabsVerifier,
    RetellVerifier,
    StandardWebhooksVerifier,
    TokenVerifier,
    VapiHmacVerifier,
    Verifier,
    vapi_format,
)

PLATFORMS = ("vapi", "retell", "elevenlabs", "native")
Platform = Literal["vapi", "retell", "elevenlabs", "native"]
RetellEvent = Literal["call_ended", "call_analyzed"]
RETELL_ANALYZED: RetellEvent = "call_analyzed"


class AccountRef(Strict):
    id: str = Field(
        min_length=1, max_length=MAX_ID_LENGTH, description="The tenant every event of this endpoint belongs to."
    )
    name: str | None = Field(None, description="Shown in templates as account_name.")


class AgentAlias(Strict):
    id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, description="The postcall agent id.")
    name: str | None = Field(None, description="Shown as agent_name (ElevenLabs payloads carry none).")


class EndpointBase(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="The last segment of the URL.")
    account: AccountRef
    secrets: list[SecretRef] = Field(min_length=1, max_length=2, description="Current first; two while rotating.")
    agents: dict[str, AgentAlias] = Field(
        default_factory=dict,
        description="The platform's agent id -> the agent's id in postcall (its configuration) and name. "
        "An agent not listed keeps the platform's id.",
    )
    default_agent_id: str | None = Field(
        None, description="Agent id for a payload that names none (a Vapi transient assistant)."
    )
    only_listed_agents: bool = Field(
        False,
        description="true: a payload whose agent is neither listed in `agents` nor the default_agent_id is "
        "refused (422, agent.id). false: an agent no endpoint of another account lists is accepted.",
    )


class VapiHmac(Strict):
    """Vapi's HmacAuthenticationPlan, with Vapi's defaults (its camelCase names in snake_case)."""

    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    signature_header: HeaderName = "x-signature"
    timestamp_header: HeaderName = "x-timestamp"
    include_timestamp: bool = Field(True, description="false: Vapi signs without a timestamp (no replay protection).")
    payload_format: str | None = Field(
        None,
        description="Placeholders: {body}, {timestamp}, {method}, {url}, {svix-id}. "
        "Default `{timestamp}.{body}`, or `{body}` when include_timestamp is false.",
    )
    message_id_header: HeaderName | None = Field(
        None, description="The header that carries {svix-id} (messageIdHeader)."
    )
    url: str | None = Field(
        None, description="For {url}: the server URL exactly as set in Vapi (a proxy may rewrite the one we see)."
    )
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", description="Signature prefix, e.g. `sha256=` (signaturePrefix).")
    secret_is_base64: bool = Field(False, description="The secret is base64: its decoded bytes are the key.")

    @property
    def signed_format(self) -> str:
        if self.payload_format is not None:
            return self.payload_format
        return "{timestamp}.{body}" if self.include_timestamp else "{body}"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("url must be the http(s) URL set as the server URL in Vapi")
        return value

    @model_validator(mode="after")
    def _usable(self) -> VapiHmac:
        # ValueError: an unknown placeholder, not exactly one {body}, {url} / {svix-id} without their setting
        parts = vapi_format(self.signed_format, self.url, self.message_id_header)
        if (True, b"timestamp") in parts and not self.include_timestamp:
            raise ValueError("payload_format uses {timestamp} but include_timestamp is false")
        return self

    def verifier(self, secrets: list[str], tolerance_seconds: float) -> VapiHmacVerifier:
        fields = self.model_dump(exclude={"include_timestamp", "payload_format"})
        return VapiHmacVerifier(secrets, tolerance_seconds, payload_format=self.signed_format, **fields)


class VapiBearer(Strict):
    """Vapi's Bearer Token credential: the header it is sent in, with or without `Bearer `."""

    header: HeaderName = "authorization"
    bearer_prefix: bool = Field(True, description="false: the header holds the token alone.")


class VapiEndpoint(EndpointBase):
    platform: Literal["vapi"]
    auth: Literal["hmac", "bearer", "x-vapi-secret"] = Field(
        "hmac",
        description="hmac: a Vapi HMAC credential; bearer: a Bearer Token credential; x-vapi-secret: legacy.",
    )
    hmac: VapiHmac = VapiHmac()
    bearer: VapiBearer = VapiBearer()
    tolerance_seconds: float = Field(300.0, gt=0, description="Largest age of a signed timestamp.")


class RetellEndpoint(EndpointBase):
    platform: Literal["retell"]
    publish_on: list[RetellEvent] = Field(
        default_factory=lambda: [RETELL_ANALYZED],
        min_length=1,
        description="call_analyzed carries Retell's analysis and comes for every call, connected or not; "
        "add call_ended for a faster start (each event is published under its own event id).",
    )
    tolerance_seconds: float = Field(300.0, gt=0, description="Retell's own helper allows 5 minutes.")


class ElevenLabsEndpoint(EndpointBase):
    platform: Literal["elevenlabs"]
    tolerance_seconds: float = Field(1800.0, gt=0, description="ElevenLabs' own helper allows 30 minutes.")


class NativeEndpoint(EndpointBase):
    platform: Literal["native"]
    auth: Literal["standard-webhooks", "bearer"] = Field(
        "standard-webhooks", description="standard-webhooks: whsec_ secrets; bearer: `Authorization: Bearer`."
    )


AnyEndpoint = VapiEndpoint | RetellEndpoint | ElevenLabsEndpoint | NativeEndpoint


class EndpointsFile(Strict):
    endpoints: list[Annotated[AnyEndpoint, Field(discriminator="platform")]] = Field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    config: AnyEndpoint
    verifier: Verifier
    foreign_agents: frozenset[str] = frozenset()  # the agents only other accounts' endpoints list

    @cached_property
    def agent_ids(self) -> frozenset[str]:
        """The postcall agents this endpoint lists: each alias's id (or the platform's id it keeps), the default."""
        config = self.config
        listed = {alias.id or platform_id for platform_id, alias in config.agents.items()}
        return frozenset(listed | ({config.default_agent_id} if config.default_agent_id else set()))

    def agent_refusal(self, agent_id: str) -> str | None:
        """Why a mapped event's agent may not be published through this endpoint, or None."""
        if agent_id in self.foreign_agents:  # its flows, destinations and credentials are another tenant's
            account = self.config.account.id
            return f"agent {agent_id!r} is another account's: this endpoint publishes for account {account!r}"
        if self.config.only_listed_agents and agent_id not in self.agent_ids:
            account = self.config.account.id
            return f"agent {agent_id!r} is not listed on this endpoint (only_listed_agents), account {account!r}"
        return None

    @cached_property
    def platform(self) -> Platform:
        return self.config.platform

    @property
    def path(self) -> str:
        return f"/webhooks/{self.platform}/{self.config.name}"

    # what every request's mapping context takes from the configuration, built once per endpoint
    @cached_property
    def agent_aliases(self) -> dict[str, tuple[str | None, str | None]]:
        """The platform's agent id -> (postcall agent id, name)."""
        return {k: (a.id, a.name) for k, a in self.config.agents.items()}

    @cached_property
    def publish_on(self) -> tuple[str, ...]:
        """Retell: the events that become a conversation (other platforms: none)."""
        return tuple(self.config.publish_on) if isinstance(self.config, RetellEndpoint) else ()

    @cached_property
    def context_fields(self) -> dict[str, Any]:
        """Every field of a request's mapping Context but its time (`Context.received`)."""
        config = self.config
        return {
            "account_id": config.account.id,
            "account_name": config.account.name,
            "agents": self.agent_aliases,
            "default_agent_id": config.default_agent_id,
            "publish_on": self.publish_on,
        }


def verifier(config: AnyEndpoint, secrets: list[str]) -> Verifier:
    if isinstance(config, VapiEndpoint):
        if config.auth == "bearer":
            return TokenVerifier(secrets, config.bearer.header.lower(), "Bearer" if config.bearer.bearer_prefix else "")
        if config.auth == "x-vapi-secret":
            return TokenVerifier(secrets, header="x-vapi-secret", scheme="")
        return config.hmac.verifier(secrets, config.tolerance_seconds)
    if isinstance(config, RetellEndpoint):
        return RetellVerifier(secrets, config.tolerance_seconds)
    if isinstance(config, ElevenLabsEndpoint):
        return ElevenLabsVerifier(secrets, config.tolerance_seconds)
    if config.auth == "bearer":
        return TokenVerifier(secrets)
    for secret in secrets:
        _standard_secret(secret)
    return StandardWebhooksVerifier(secrets)


def _standard_secret(secret: str) -> None:
    """whsec_ + base64 of at least 16 bytes; the package itself would take any text (it drops what is
    not base64), so a mistyped secret would verify nothing and say nothing."""
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or len(key) < 16:
        raise ValueError("not a Standard Webhooks secret (whsec_ followed by base64 of at least 16 bytes)")


Endpoints = dict[tuple[str, str], Endpoint]


def parse(text: str | bytes, environ: Mapping[str, str], source: str = "<endpoints>") -> Endpoints:
    """Validate the file and read every secret; keyed by (platform, name). Problems are reported as
    `file:line: path: message`, with no value from the file or the environment echoed."""
    tree, parsed, issues = validated(text, environ, source, EndpointsFile, "endpoints", PLATFORMS)
    out: Endpoints = {}
    for i, config in enumerate(parsed.endpoints if parsed is not None else ()):
        key = (config.platform, config.name)
        if key in out:
            issues.append((("endpoints", i, "name"), f"endpoint {config.platform}/{config.name} is defined twice"))
            continue
        try:
            secrets = [ref.reveal(environ, f"endpoint {config.platform}/{config.name}") for ref in config.secrets]
            out[key] = Endpoint(config, verifier(config, secrets))
        except (ConfigError, ValueError) as exc:
            issues.append((("endpoints", i, "secrets"), str(exc)))
    raise_for(issues, tree, source)
    return _with_foreign_agents(out)


def _with_foreign_agents(endpoints: Endpoints) -> Endpoints:
    """Each endpoint with the agents listed by endpoints of other accounts and by none of its own account's."""
    accounts: dict[str, set[str]] = {}  # agent id -> the accounts whose endpoints list it
    for endpoint in endpoints.values():
        for agent_id in endpoint.agent_ids:
            accounts.setdefault(agent_id, set()).add(endpoint.config.account.id)
    return {
        key: replace(
            endpoint,
            foreign_agents=frozenset(a for a, owners in accounts.items() if endpoint.config.account.id not in owners),
        )
        for key, endpoint in endpoints.items()
    }


def load(path: Path, environ: Mapping[str, str] | None = None) -> Endpoints:
    return parse(read_bytes(path, "endpoints file"), os.environ if environ is None else environ, str(path))
