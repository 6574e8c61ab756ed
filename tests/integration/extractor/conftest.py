"""The fake OpenAI-compatible server and an extractor wired to it exactly as `python -m services.extractor`
wires one (settings -> AsyncOpenAI with max_retries=0 -> OpenAIProvider -> Extractor)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from schemas.agents import ExtractionSpec
from schemas.routes import EXTRACTOR
from schemas.topics import CONVERSATION_ENDED, CONVERSATION_EXTRACTED
from services.common.api import Service
from services.extractor.__main__ import open_http, open_llm
from services.extractor.handler import Extractor
from services.extractor.llm import OpenAIProvider
from services.extractor.settings import ExtractorSettings
from tests.support.fake_llm import FakeLLM

Make = Callable[..., Any]


def on_topics(ex: Extractor, service: str, source: str, sink: str) -> Service[Any]:
    """The extractor's service on a test's own topics (and service name: its own retry and dead-letter topics)."""
    names = {CONVERSATION_ENDED: source, CONVERSATION_EXTRACTED: sink}
    route = EXTRACTOR.renamed(lambda name: names.get(name, name), service=service)
    return Service(route, ex.handle, ex.on_failure)


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def settings_for(fake: FakeLLM, config_dir: Path, **overrides: Any) -> ExtractorSettings:
    llm = {
        "base_url": fake.base_url,
        "model": "gpt-4o-mini",
        "request_timeout_seconds": 5.0,
        **overrides.pop("llm", {}),
    }
    return ExtractorSettings(config_dir=config_dir, llm=llm, **overrides)


@asynccontextmanager
async def extractor(fake: FakeLLM, spec: ExtractionSpec, tmp_path: Path, **overrides: Any) -> AsyncIterator[Extractor]:
    settings = settings_for(fake, tmp_path, **overrides)
    clients = open_llm(settings)
    assert clients
    provider = OpenAIProvider(
        clients,
        settings.llm,
        settings.circuit,
        settings.default_country_code,
        retry_after_cap=settings.runtime.retry_after_cap_seconds,
    )
    async with open_http(settings) as http:
        yield Extractor(settings, lambda event: spec, http, provider)
    for client in clients:
        await client.close()
