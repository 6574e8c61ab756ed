"""`python -m services.router`: settings -> configuration folder (watched) -> handler -> Runtime."""

from __future__ import annotations

import asyncio

from schemas.events import ConversationExtracted
from schemas.topics import CONVERSATION_EXTRACTED
from services.common import logging as plog
from services.common.runtime import Runtime, serve
from services.router.catalog import CatalogHolder
from services.router.handler import RouterHandler
from services.router.settings import RouterSettings

VERSION = "0.1.0"


async def main() -> None:
    settings = RouterSettings()  # config_dir comes from the environment (POSTCALL_CONFIG_DIR)
    plog.setup("router", settings.log_level)
    catalog = CatalogHolder(settings.config_dir, settings.fallback_text)
    runtime: Runtime[ConversationExtracted] = Runtime(
        service="router",
        kafka=settings.kafka,
        runtime=settings.runtime,
        topics=[CONVERSATION_EXTRACTED],
        input_type=ConversationExtracted,
        handler=RouterHandler(catalog),
        version=VERSION,
    )
    async with catalog.watching(settings.reload_interval_seconds):
        await serve(runtime)


if __name__ == "__main__":
    asyncio.run(main())
