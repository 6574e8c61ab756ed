"""Builders for router unit tests: a conversation with its extraction, and an agent from YAML text."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from schemas.agents import AgentConfig, load_catalog, trigger_id
from schemas.events import (
    ConversationEnded,
    ConversationExtracted,
    ExtractedValue,
    Extraction,
    TriggerAnswer,
)
from services.router.engine import CompiledAgent

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def conversation(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "conversation_id": "conv-1",
        "occurred_at": "2026-03-10T10:05:00Z",
        "account": {"id": "acct-1", "name": "Copperline"},
        "agent": {"id": "support-line", "name": "Support Assistant", "version": "3"},
        "channel": "phone",
        "direction": "inbound",
        "status": "completed",
        "started_at": "2026-03-10T09:58:30Z",
        "ended_at": "2026-03-10T10:03:05Z",
        "end_reason": {"canonical": "CUSTOMER_HANGUP", "raw": "customer-ended-call", "source_platform": "vapi"},
        "customer": {
            "phone_number": "+16305550123",
            "name": "Tom Becker",
            "email": "tom@becker.example",
            "contact_id": "c-1",
        },
        "to_number": "+13125550100",
        "messages": [
            {"role": "agent", "text": "Hello, how can I help?"},
            {"role": "customer", "text": "Please call me back."},
        ],
        "conversation_url": "https://voice.example/c/conv-1",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def event(
    *,
    fields: dict[str, Any] | None = None,
    triggers: dict[str, bool] | None = None,
    dynamic: dict[str, Any] | None = None,
    recipients: dict[str, list[str]] | None = None,
    status: Literal["ok", "failed"] = "ok",
    reason: str | None = None,
    summary: str | None = "Customer asked for a callback.",
    confidence: dict[str, float] | None = None,
    review: set[str] | None = None,
    **conv: Any,
) -> ConversationExtracted:
    """fields: name -> value; triggers: question -> answer (ids computed like the extractor does)."""
    confidence, review = confidence or {}, review or set()
    extraction = Extraction(
        status=status,
        reason=reason,
        provider="test",
        config_revision="rev-test",
        fields={
            n: ExtractedValue(value=v, confidence=confidence.get(n), needs_review=n in review)
            for n, v in (fields or {}).items()
        },
        dynamic={n: ExtractedValue(value=v) for n, v in (dynamic or {}).items()},
        triggers={
            trigger_id(q): TriggerAnswer(question=q, answer=a, confidence=0.9) for q, a in (triggers or {}).items()
        },
        recipients=recipients or {},
        summary=summary,
    )
    return ConversationExtracted(
        event_id="evt-1",
        conversation=ConversationEnded.model_validate(conversation(**conv)),
        extraction=extraction,
        extracted_at=NOW,
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def config(tmp_path: Path, text: str) -> AgentConfig:
    """The configuration of one agent file written into an otherwise empty folder."""
    write(tmp_path, "agent.yaml", text)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == (), [str(p) for p in catalog.problems]
    [found] = catalog.configs.values()
    return found


def agent(tmp_path: Path, text: str, fallback: str = "(not available)") -> CompiledAgent:
    return CompiledAgent(config(tmp_path, text), fallback)
