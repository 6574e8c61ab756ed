"""`python -m services.extractor`: settings -> configuration folder (watched) -> HTTP client and LLM
client, opened once -> handler -> Runtime, consuming postcall.conversation-ended.v1 until SIGTERM.

The HTTP client fetches transcript_url, a URL from the platform's event: it goes through the dispatcher's
SSRF-guarded transport (addresses vetted where the socket opens), ignores the environment (no proxies,
no .netrc credentials) and follows no redirects.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai

from services.common import observability as plog
from services.common.config import ConfigError
from services.common.runtime import Runtime, serve
from services.common.settings import run_service
from services.common.ssrf import guarded_client
from services.extractor.handler import Extractor
from services.extractor.llm import OpenAIProvider
from services.extractor.settings import ExtractorSettings
from services.extractor.specs import SpecSource

log = logging.getLogger("postcall.extractor")


def open_llm(settings: ExtractorSettings) -> list[openai.AsyncOpenAI]:
    """The LLM clients (one per `requests_per_client` records in flight); none when neither an API key nor
    a base URL is set, and every agent then gets the heuristic provider."""
    llm = settings.llm
    if not llm.configured:
        return []
    return [
        openai.AsyncOpenAI(
            # local servers (vLLM, Ollama, llama.cpp) take any key; the client insists on one
            api_key=llm.api_key.get_secret_value() if llm.api_key else "unused",
            base_url=llm.base_url,
            timeout=llm.request_timeout_seconds,
            max_retries=0,  # the runtime is the one layer that retries: every attempt is visible
        )
        for _ in range(-(-settings.runtime.max_in_flight // llm.requests_per_client))
    ]


def llm_provider(settings: ExtractorSettings, clients: list[openai.AsyncOpenAI]) -> OpenAIProvider | None:
    """The openai provider over the clients; None without clients (every agent gets the heuristic).
    `postcall try` builds its provider here too, so a dry run extracts as the service does."""
    if not clients:
        return None
    return OpenAIProvider(
        clients,
        settings.llm,
        settings.circuit,
        settings.default_country_code,
        retry_after_cap=settings.runtime.retry_after_cap_seconds,
    )


def open_http(settings: ExtractorSettings) -> httpx.AsyncClient:
    """The transcript_url client. The guard lives in the dispatcher (it vets webhook destinations the
    same way) and is imported, not copied: one place decides which addresses are refused."""
    limits = httpx.Limits(max_connections=settings.runtime.max_in_flight)
    return guarded_client(allow_private=settings.transcript_allow_private, limits=limits)


@asynccontextmanager
async def open_provider(settings: ExtractorSettings) -> AsyncIterator[OpenAIProvider | None]:
    """The `openai` provider, its endpoint probed once (capabilities.py), or None: the heuristic. Says at
    start which provider is active (and which model at which URL, in which mode)."""
    clients = open_llm(settings)
    provider = llm_provider(settings, clients)
    if provider is None:
        log.info("extraction provider: heuristic (no LLM endpoint configured; set POSTCALL_LLM__BASE_URL or "
                 "POSTCALL_LLM__API_KEY to use a model)", extra={"provider": "heuristic"})  # fmt: skip
        yield None
        return
    try:
        await provider.start()
        yield provider
    finally:
        await provider.close()
        for client in clients:
            await client.close()


async def main() -> None:
    settings = ExtractorSettings()  # config_dir comes from the environment (POSTCALL_CONFIG_DIR)
    if (problem := settings.timing_problem()) is not None:
        raise ConfigError(problem)  # one line and exit 2 (run_service), before anything is opened
    plog.setup("extractor", settings.log_level)
    specs = SpecSource(settings.config_dir)
    async with open_http(settings) as http, open_provider(settings) as provider:
        extractor = Extractor(settings, specs, http, provider)
        runtime = Runtime(extractor.service(), kafka=settings.kafka, settings=settings.runtime)
        async with specs.watching(settings.reload_interval_seconds):
            await serve(runtime)


def start(label: str = "extractor") -> int:
    """Run until stopped; a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, ExtractorSettings)


if __name__ == "__main__":
    sys.exit(start())
