"""Extractor handler: consumes postcall.conversation-ended.v1, produces postcall.conversation-extracted.v1.

One extraction per conversation: the agent's ExtractionSpec (fields, dyn_* variables, trigger
questions, recipient routes, summary) is filled by the `openai` provider (one model call, plus at most
one repair) or by the offline `heuristic` provider, then every value's evidence is checked against the
transcript (review.py).

Fates: an agent without configuration is permanent (dead letter, no output, as in the router). A
permanent extraction failure (refusal, invalid output after the repair, context too long, transcript
too large, malformed or refused by the SSRF guard) still produces a `failed` ConversationExtracted, so
end-reason flows run, and the input goes to the dead-letter topic for re-extraction; so does every
other way into the dead-letter topic (retries exhausted, an unknown exception). An LLM outage (open
circuit) pauses consumption. A copy of a record already taken (the same event id in another record,
within the window: duplicates.py) produces nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson

from schemas import headers as h
from schemas.agents import ExtractionSpec
from schemas.events import ConversationEnded, ConversationExtracted, Extraction, Message, Usage
from schemas.routes import EXTRACTOR
from services.common.api import Context, Event, Failure, PermanentError, PostcallError, Service
from services.extractor import heuristic, platform
from services.extractor.duplicates import SeenEvents
from services.extractor.llm import ExtractionFailed, OpenAIProvider
from services.extractor.metrics import DUPLICATES, EXTRACTIONS, LLM_DURATION, LLM_REQUESTS
from services.extractor.review import normalize, review
from services.extractor.settings import ExtractorSettings
from services.extractor.transcript import fetch_transcript, parse_transcript, render

log = logging.getLogger("postcall.extractor")
SpecFor = Callable[[ConversationEnded], ExtractionSpec | None]
_NAMESPACE = uuid.UUID("8f5e2a8c-4c1e-4d7a-9d43-6f0c2b7e9a11")
T = TypeVar("T")


class UnknownAgent(PermanentError):
    """Raised when no configuration names the conversation's agent (and version)."""


class Extractor:
    def __init__(
        self,
        settings: ExtractorSettings,
        spec_for: SpecFor,
        http: httpx.AsyncClient,
        llm: OpenAIProvider | None,
    ) -> None:
        self._settings = settings
        self._spec_for = spec_for
        self._http = http
        self._llm = llm
        self._seen = SeenEvents(settings.duplicates.window_seconds, settings.duplicates.memory)

    def service(self) -> Service[ConversationEnded]:
        return Service(EXTRACTOR, self.handle, self.on_failure)

    async def handle(self, event: ConversationEnded, ctx: Context) -> Sequence[Event]:
        if self._copy(event, ctx):
            return []
        spec = self._spec_for(event)
        if spec is None:
            # not taken: the same event published again for a configured agent (`postcall publish --agent`)
            # is extracted, not skipped as a copy of this record
            self._seen.not_taken((event.account.id, event.event_id), (ctx.partition, ctx.offset))
            version = f" version {event.agent.version}" if event.agent.version else ""
            raise UnknownAgent(f"no configuration for agent {event.agent.id}{version}")
        try:
            extraction = await self.extract(event, spec)
        except PermanentError as exc:
            log.warning("extraction failed", extra={"conversation_id": event.conversation_id, "reason": str(exc)})
            raise
        return [self._extracted(event, ctx, extraction)]

    def _copy(self, event: ConversationEnded, ctx: Context) -> bool:
        """A copy of a record already taken (duplicates.py): the same account and event id (the
        contract's idempotency key) in another record. A replayed dead letter or a re-extraction is never one, nor
        a retry tier's copy: it continues a record that was taken, here or in another process (the tiers'
        partitions are assigned apart from the main topic's), which may have taken another copy."""
        if h.REPLAYED_FROM in ctx.headers or h.REEXTRACT_OF in ctx.headers:
            return False
        first = self._seen.first_place((event.account.id, event.event_id), (ctx.partition, ctx.offset))
        if first is None or ctx.attempt > 1:
            return False
        DUPLICATES.inc()
        log.info(
            "duplicate skipped: this event id was taken from another record",
            extra={"conversation_id": event.conversation_id, "event_id": event.event_id,
                   "first_partition": first[0], "first_offset": first[1]},
        )  # fmt: skip
        return True

    async def extract(self, event: ConversationEnded, spec: ExtractionSpec) -> Extraction:
        """The extraction of one conversation (what `handle` publishes; `postcall eval` scores it).
        Raises PermanentError for a failed extraction, and what the runtime retries."""
        provider, note = self.provider_for(spec)
        started = time.monotonic()
        try:
            extraction = await self._extract(event, spec, provider, note)
        except PermanentError:
            EXTRACTIONS.labels(provider, "failed").inc()
            raise
        EXTRACTIONS.labels(extraction.provider, "ok").inc()
        return extraction.model_copy(update={"latency_ms": round((time.monotonic() - started) * 1000, 1)})

    def on_failure(self, event: ConversationEnded, ctx: Context, failure: Failure) -> Sequence[Event]:
        """Whatever sends the record to the dead-letter topic (a permanent extraction failure, retries
        exhausted, an unknown exception) still says `failed`, so the end-reason flows run. Nothing while
        retries remain, and nothing for an agent without a usable configuration: there are no flows."""
        if failure.fate != "dead_letter" or isinstance(failure.error, UnknownAgent):
            return []
        try:
            spec = self._spec_for(event)
        except PostcallError:
            return []
        if spec is None:
            return []
        provider, _ = self.provider_for(spec)
        return [self._extracted(event, ctx, self.failed(spec, provider, failure.error))]

    def failed(self, spec: ExtractionSpec, provider: str, exc: BaseException) -> Extraction:
        """The `failed` record for this error, naming the provider, model and endpoint that failed."""
        endpoint = self._llm.endpoint if provider == "openai" and self._llm is not None else None
        return failed_extraction(spec, provider, exc, self.model_for(spec, provider), endpoint)

    def provider_for(self, spec: ExtractionSpec) -> tuple[str, str | None]:
        wanted = spec.provider or ("openai" if self._llm is not None else "heuristic")
        if wanted == "openai" and self._llm is None:
            return "heuristic", "the agent asks for the openai provider but no LLM endpoint is configured"
        return wanted, None

    def model_for(self, spec: ExtractionSpec, provider: str) -> str | None:
        return (spec.model or self._settings.llm.model) if provider == "openai" else None

    async def _extract(
        self, event: ConversationEnded, spec: ExtractionSpec, provider: str, note: str | None
    ) -> Extraction:
        analysis = event.platform_analysis
        if not spec.trust_platform or analysis is None:
            return await self._by_provider(event, spec, provider, note)
        values = platform.taken(spec, analysis, self._settings.default_country_code)
        summary = platform.summary_of(spec, analysis)
        rest = platform.remaining(spec, values, summary)
        if platform.asks_nothing(rest):
            return platform.only(spec, values, summary)
        return platform.merged(await self._by_provider(event, rest, provider, note), values, summary)

    async def _by_provider(
        self, event: ConversationEnded, spec: ExtractionSpec, provider: str, note: str | None
    ) -> Extraction:
        messages = await self._messages(event)
        local_end = local_end_of(event)
        big = sum(len(m.text) for m in messages) > self._settings.offload_chars
        said = any(m.text and not m.text.isspace() for m in messages)  # turns with no words say nothing
        asked = not platform.asks_nothing(spec)  # flows on the end reason alone, `summary: false`: nothing to fill
        if provider == "openai" and self._llm is not None and said and asked:
            fitted = await _maybe_thread(big, self._llm.fit, spec, messages)
            extraction = await self._llm.extract(spec, event, fitted, local_end, messages)
            return await _maybe_thread(big, _review_llm, extraction, spec, fitted.text)
        if provider == "openai" and not asked:
            note = "the configuration asks nothing of this conversation: the model was not called"
        elif provider == "openai" and not said:
            note = "empty transcript: the model was not called"
        extraction = await _maybe_thread(big, self._heuristic, spec, messages, local_end)
        return extraction.model_copy(update={"reason": note}) if note else extraction

    def _heuristic(self, spec: ExtractionSpec, messages: list[Message], local_end: datetime) -> Extraction:
        started = time.monotonic()
        extraction = heuristic.extract(spec, messages, local_end, self._settings.default_country_code)
        LLM_DURATION.labels(heuristic.PROVIDER, heuristic.PROVIDER).observe(time.monotonic() - started)
        LLM_REQUESTS.labels(heuristic.PROVIDER, heuristic.PROVIDER, "ok").inc()
        return review(extraction, spec, normalize("\n".join(render(messages))))

    async def _messages(self, event: ConversationEnded) -> list[Message]:
        if event.messages or event.transcript_url is None:  # `messages: []` beside a claim check: fetch it
            return list(event.messages or [])
        s = self._settings
        body = await fetch_transcript(self._http, event.transcript_url, s.transcript_max_bytes,
                                      s.transcript_timeout_seconds)  # fmt: skip
        return await _maybe_thread(len(body) > s.offload_chars, parse_transcript, body)

    def _extracted(self, event: ConversationEnded, ctx: Context, extraction: Extraction) -> ConversationExtracted:
        origin = ctx.event_id or ""  # a re-extraction's copy has a fresh CloudEvents id: a new output id
        # the account too (an event id is unique within its account: duplicates.py), and as a JSON array, so
        # that no two inputs share an output id (the recorder keeps one row per event id and status)
        name = orjson.dumps([event.account.id, event.event_id, origin, extraction.config_revision]).decode()
        return ConversationExtracted(
            event_id=str(uuid.uuid5(_NAMESPACE, name)),
            conversation=event,
            extraction=extraction,
            extracted_at=datetime.now(UTC),
        )


def _review_llm(extraction: Extraction, spec: ExtractionSpec, seen: str) -> Extraction:
    return review(extraction, spec, normalize(seen))


def failed_extraction(
    spec: ExtractionSpec, provider: str, exc: BaseException, model: str | None, endpoint: str | None = None
) -> Extraction:
    failure = exc if isinstance(exc, ExtractionFailed) else None
    # an unknown exception's message alone ("'start'") says little: name its class
    reason = str(exc) if isinstance(exc, PostcallError) else f"{type(exc).__name__}: {exc}"
    # an endpoint's text may hold a lone surrogate (half an emoji): the record must still be writable
    reason = reason[:500].encode("utf-8", "backslashreplace").decode()
    return Extraction(
        status="failed",
        reason=reason,
        provider=provider,
        model=model,
        endpoint=endpoint,
        config_revision=spec.config_revision,
        truncated=failure.truncated if failure else False,
        usage=failure.usage if failure else Usage(),
    )


def local_end_of(event: ConversationEnded) -> datetime:
    """The conversation's end in its own time zone (metadata.timezone, an IANA name), else as sent."""
    zone: tzinfo = event.ended_at.tzinfo or UTC
    name = event.metadata.get("timezone")
    if isinstance(name, str) and name:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the zone database ("America")
            log.info("unknown time zone in metadata, using the event's", extra={"timezone": name[:64]})
    ended = event.ended_at if event.ended_at.tzinfo else event.ended_at.replace(tzinfo=UTC)
    return ended.astimezone(zone)


async def _maybe_thread(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """Heavy regex and parsing work on a long transcript runs in a thread, never on the event loop."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)
