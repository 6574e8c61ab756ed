"""The fake OpenAI-compatible server and an extractor wired to it exactly as `python -m services.extractor`
wires one (settings -> AsyncOpenAI with max_retries=0 -> OpenAIProvider -> Extractor)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from schemas.agents import ExtractionSpec
from services.extractor.__main__ import open_http, open_llm
from services.extractor.handler import Extractor
from services.extractor.llm import OpenAIProvider
from services.extractor.settings import ExtractorSettings
from tests.support.fake_llm import FakeLLM

Make = Callable[..., Any]


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
async def extractor(
    fake: FakeLLM, spec: ExtractionSpec, tmp_path: Path, output_topic: str | None = None, **overrides: Any
) -> AsyncIterator[Extractor]:
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
        kwargs = {"output_topic": output_topic} if output_topic else {}
        yield Extractor(settings, lambda event: spec, http, provider, **kwargs)
    for client in clients:
        await client.close()
