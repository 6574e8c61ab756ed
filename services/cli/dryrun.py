"""A dry run of one conversation through the real extractor and router: `postcall try` and the console's
"Try a flow".

Input: a `ConversationEnded` (extracted here, by the heuristic or the configured LLM, exactly as the
extractor service would), a `ConversationExtracted` (routed as it is: a fixed extraction makes a CI check
deterministic), or a voice platform's own webhook (Vapi, Retell, ElevenLabs), mapped by the ingress's own
code (services/ingress/platforms) exactly as the ingress maps it.
The agent configuration is the folder's `Catalog.trial()`: drafts run as they will once published.

Nothing is produced and nothing is sent: the services run on the in-memory runtime
(services.common.harness, one attempt each), and their outputs (the DecisionTrace and one action record
per planned action, with its topic, key and JSON value: exactly what the dispatcher and any downstream
subscriber would receive) are collected and returned. No broker, no server. The one network access is
the one extraction itself needs: the LLM endpoint when one is configured, and a `transcript_url`
fetched through the extractor's SSRF-guarded client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.agents import ExtractionSpec, Problem
from schemas.events import ActionBase, ConversationEnded, ConversationExtracted, DecisionTrace, Extraction
from schemas.routes import ROUTER
from services.common.api import Service
from services.common.harness import Harness
from services.extractor.settings import ExtractorSettings
from services.extractor.specs import SpecSource
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from services.router.settings import RouterSettings

M = TypeVar("M", bound=BaseModel)
Provider = Literal["heuristic", "openai"]
InputKind = Literal["conversation-ended", "conversation-extracted", "vapi", "retell", "elevenlabs"]


class TrialInputError(ValueError):
    """Raised when the input is not JSON, or not a shape a dry run accepts (with what was recognised)."""


@dataclass(frozen=True)
class PlannedRecord:
    """One action record the router would produce: its topic, key and the value as JSON."""

    topic: str
    key: str
    action: ActionBase

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "value": self.action.model_dump(mode="json")}


@dataclass
class TrialResult:
    input_kind: str
    conversation: ConversationEnded | None = None
    config_source: str | None = None
    config_revision: str | None = None
    problems: list[Problem] = field(default_factory=list)  # of the agent's own files
    extraction: Extraction | None = None
    trace: DecisionTrace | None = None
    actions: list[PlannedRecord] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.trace is not None and not self.problems

    def fired(self) -> list[str]:
        return [f.flow_id for f in self.trace.flows if f.fired] if self.trace else []

    def as_json(self) -> dict[str, Any]:
        dump: Callable[[BaseModel | None], Any] = lambda m: m.model_dump(mode="json") if m is not None else None  # noqa: E731
        return {
            "ok": self.ok,
            "input_kind": self.input_kind,
            "conversation_id": self.conversation.conversation_id if self.conversation else None,
            "agent": self.conversation.agent.model_dump(mode="json") if self.conversation else None,
            "config_source": self.config_source,
            "config_revision": self.config_revision,
            "problems": [str(p) for p in self.problems],
            "extraction": dump(self.extraction),
            "decision_trace": dump(self.trace),
            "fired": self.fired(),
            "actions": [a.as_json() for a in self.actions],
            "error": self.error,
        }


def read_input(
    data: bytes, *, agent: str | None = None, account: str | None = None
) -> tuple[InputKind, ConversationEnded | ConversationExtracted]:
    """The payload as a contract event; TrialInputError names what is wrong (and what it looked like).
    A vendor payload goes through the ingress's own mapping; `agent` names the postcall agent it is for
    (the ingress's endpoints file does that in production), `account` its account."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TrialInputError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TrialInputError(
            "expected a JSON object (a ConversationEnded, a ConversationExtracted or a vendor payload)"
        )
    vendor = vendor_of(raw)
    if vendor is not None:
        return vendor, _from_vendor(vendor, raw, agent, account)
    if "conversation" in raw and "extraction" in raw:
        extracted = _validate(ConversationExtracted, raw)
        conversation = _as_agent(extracted.conversation, agent)
        return "conversation-extracted", extracted.model_copy(update={"conversation": conversation})
    event = _validate(ConversationEnded, raw)
    return "conversation-ended", _as_agent(event, agent)


VENDORS = {"vapi": "Vapi server message", "retell": "Retell call webhook", "elevenlabs": "ElevenLabs webhook"}


def vendor_of(raw: dict[str, Any]) -> InputKind | None:
    """Which voice platform's webhook a payload is, by the envelope each one always sends (the ingress's
    mapping then decides whether it is a finished conversation)."""
    message = raw.get("message")
    if isinstance(message, dict) and isinstance(message.get("type"), str):
        return "vapi"
    if isinstance(raw.get("call"), dict) and isinstance(raw.get("event") or raw.get("event_type"), str):
        return "retell"
    if isinstance(raw.get("type"), str) and isinstance(raw.get("data"), dict):
        return "elevenlabs"
    return None


def _from_vendor(vendor: str, raw: dict[str, Any], agent: str | None, account: str | None) -> ConversationEnded:
    from services.ingress.platforms import Ignored, PayloadError, map_one

    try:
        mapped = map_one(vendor, raw, account or "try", default_agent_id=agent)
    except PayloadError as exc:
        raise TrialInputError(f"not a valid {VENDORS[vendor]}: {exc}") from None
    if isinstance(mapped, Ignored):
        raise TrialInputError(f"this {VENDORS[vendor]} is not a finished conversation: {mapped.reason}")
    return _as_agent(mapped, agent)


def _as_agent(event: ConversationEnded, agent: str | None) -> ConversationEnded:
    if agent is None or agent == event.agent.id:
        return event
    return event.model_copy(update={"agent": event.agent.model_copy(update={"id": agent})})


def _validate(model: type[M], raw: dict[str, Any]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:10]]
        raise TrialInputError(f"not a valid {model.__name__}:\n  " + "\n  ".join(lines)) from None


async def dry_run(
    data: bytes,
    agents: Path,
    *,
    provider: Provider | None = None,
    agent: str | None = None,
    account: str | None = None,
    settings: ExtractorSettings | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TrialResult:
    """Extract (unless the input is already extracted) and route one conversation; never raises for bad
    input or a bad configuration: the result says what went wrong."""
    started = time.monotonic()
    try:
        kind, event = read_input(data, agent=agent, account=account)
    except TrialInputError as exc:
        return TrialResult(input_kind="invalid", error=str(exc))
    extracted = event if isinstance(event, ConversationExtracted) else None
    conversation = extracted.conversation if extracted else event
    assert isinstance(conversation, ConversationEnded)
    result = TrialResult(input_kind=kind, conversation=conversation)
    router = CatalogHolder(agents, RouterSettings(config_dir=agents).fallback_text, trial=True)
    _describe_config(result, router, conversation)
    if result.config_source is None or result.problems:
        # a draft with problems would otherwise be tried as the published file it is meant to replace
        result.error = _no_config(conversation, result.problems)
        if kind in VENDORS and agent is None and not result.problems:
            platform = VENDORS[kind].split()[0]
            result.error += (
                f"; the {platform} payload names the platform's agent id: name the postcall agent it is for (--agent)"
            )
        return result
    if extracted is None:
        extracted = await _extract(result, conversation, agents, provider, settings)
    if extracted is not None:
        await _route(result, RouterHandler(router, clock=clock), extracted)
    result.seconds = time.monotonic() - started
    return result


def _describe_config(result: TrialResult, router: CatalogHolder, conversation: ConversationEnded) -> None:
    catalog = router.catalog
    config = catalog.lookup(conversation.agent.id, conversation.agent.version)
    if config is not None:
        result.config_source, result.config_revision = config.source, config.revision
    # a file whose agent cannot even be read may be this agent's
    mine = (conversation.agent.id, None)
    result.problems = [p for f in catalog.files.values() if f.agent in mine for p in f.problems]


def _no_config(conversation: ConversationEnded, problems: Sequence[Problem]) -> str:
    agent = conversation.agent
    what = f"agent {agent.id!r}" + (f" version {agent.version!r}" if agent.version else "")
    if problems:
        return f"the configuration of {what} has problems and cannot be tried"
    return f"no configuration (published or draft) for {what}"


async def _extract(
    result: TrialResult,
    conversation: ConversationEnded,
    agents: Path,
    provider: Provider | None,
    settings: ExtractorSettings | None,
) -> ConversationExtracted | None:
    # imported here: the extractor's LLM client (openai) would add ~1 s to the start of every command
    from services.extractor.__main__ import llm_provider, open_http, open_llm
    from services.extractor.handler import Extractor

    settings = settings or ExtractorSettings(config_dir=agents)
    if provider == "openai" and not settings.llm.configured:  # asked for by the user: not the heuristic instead
        result.error = (
            "--provider openai asks for the LLM, but no LLM endpoint is configured: set POSTCALL_LLM__BASE_URL "
            "and/or POSTCALL_LLM__API_KEY (for the console: the API's), or try the offline extractor with --provider "
            "heuristic (the console's Extraction: heuristic)"
        )
        return None
    specs = SpecSource(agents, trial=True)

    def spec_for(event: ConversationEnded) -> ExtractionSpec | None:
        spec = specs(event)
        return spec.model_copy(update={"provider": provider}) if spec is not None and provider else spec

    clients = open_llm(settings)
    try:
        async with open_http(settings) as http:
            extractor = Extractor(settings, spec_for, http, llm_provider(settings, clients))
            out = await Harness(extractor.service(), burst=False).send(conversation)
    finally:
        for client in clients:
            await client.close()
    if not out.events:  # e.g. the LLM endpoint is down: the live service would retry
        result.error = f"extraction did not finish: {out.error}"
        return None
    # a permanent failure still says `failed` and routes (end-reason flows), as live
    extracted = _only(out.events, ConversationExtracted)
    result.extraction = extracted.extraction
    return extracted


async def _route(result: TrialResult, router: RouterHandler, extracted: ConversationExtracted) -> None:
    result.extraction = extracted.extraction
    out = await Harness(Service(ROUTER, router.handle), burst=False).send(
        extracted, timestamp_ms=int(time.time() * 1000)
    )
    if out.error is not None:
        result.error = f"routing failed: {out.error}"
        return
    result.trace = _only(out.events, DecisionTrace)
    result.actions = [
        PlannedRecord(o.topic, (o.key or b"").decode(), o.event) for o in out.outputs if isinstance(o.event, ActionBase)
    ]


def _only(events: Sequence[BaseModel], model: type[M]) -> M:
    [value] = [e for e in events if isinstance(e, model)]
    return value
