"""`python -m services.router`: settings -> configuration folder (watched) -> handler -> Runtime."""

from __future__ import annotations

import sys

from services.common import observability as plog
from services.common.runtime import Runtime, serve
from services.common.settings import run_service
from services.router.catalog import CatalogHolder
from services.router.handler import service
from services.router.settings import RouterSettings


async def main() -> None:
    settings = RouterSettings()  # config_dir comes from the environment (POSTCALL_CONFIG_DIR)
    plog.setup("router", settings.log_level)
    catalog = CatalogHolder(settings.config_dir, settings.fallback_text)
    runtime = Runtime(service(catalog), kafka=settings.kafka, settings=settings.runtime)
    async with catalog.watching(settings.reload_interval_seconds):
        await serve(runtime)


def start(label: str = "router") -> int:
    """Run until stopped; a setting the environment gets wrong is named on stderr (exit 2)."""
    return run_service(label, main, RouterSettings)


if __name__ == "__main__":
    sys.exit(start())
