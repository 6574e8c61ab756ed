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
from services.devkit.llama import LlamaBuild, LlamaServer, cached
from services.extractor.__main__ import llm_provider, open_http, open_llm, open_provider
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


# ── a real llama.cpp server (scripts/build-llama.sh builds it once; these tests skip until then) ──────

NOT_BUILT = (
    "llama-server and its model are not built yet: `make test-llm` (or scripts/build-llama.sh) builds them once, "
    "about 12 minutes on two cores, into .cache/llama/ and ~/.cache/postcall/llama/"
)


@pytest.fixture(scope="session")
def llama_build() -> LlamaBuild:
    found = cached()
    if found is None:
        pytest.skip(NOT_BUILT)
    return found


@pytest.fixture(scope="session")
def llama(llama_build: LlamaBuild) -> Iterator[LlamaServer]:
    """One llama-server (SmolLM2-135M-Instruct, 4096 tokens of context) for the session."""
    with LlamaServer(llama_build, context=4096) as server:
        yield server


@asynccontextmanager
async def real_extractor(
    server: LlamaServer, tmp_path: Path, *, probe: bool = True, **llm: Any
) -> AsyncIterator[Extractor]:
    """An extractor wired to a real llama-server as `python -m services.extractor` wires one (probed at
    start) or, with probe=False, as an operator who configured nothing would get before probing."""
    settings = ExtractorSettings(
        config_dir=tmp_path,
        llm={"base_url": server.base_url, "model": server.model, "request_timeout_seconds": 240.0, **llm},
    )
    if probe:
        async with open_http(settings) as http, open_provider(settings) as provider:
            yield Extractor(settings, lambda event: None, http, provider)
        return
    clients = open_llm(settings)
    unprobed = llm_provider(settings, clients)
    async with open_http(settings) as http:
        yield Extractor(settings, lambda event: None, http, unprobed)
    for client in clients:
        await client.close()
