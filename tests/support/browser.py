"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright for Python.

Playwright's wheel carries its driver but its own browser download cannot work here, so the browser is
the Debian package (scripts/ensure-tools.sh installs `chromium` and `chromium-driver`), launched with a
fresh profile folder per browser and everything that would phone home switched off. Tests that need it
are skipped, saying why, when the binary is missing.

Screenshots go to POSTCALL_SCREENSHOTS (`make screenshots` sets docs/console/, which docs/console.md
shows), else to .cache/screenshots/.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("POSTCALL_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (scripts/ensure-tools.sh installs Debian's chromium)"
)


@asynccontextmanager
async def chromium(
    viewport: dict[str, int] | None = None, timezone_id: str = "America/Chicago"
) -> AsyncIterator[BrowserContext]:
    """One browser with a fresh profile (its own cookies), closed and deleted after."""
    with tempfile.TemporaryDirectory(prefix="postcall-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=ARGS,
                viewport=viewport or DESKTOP,  # type: ignore[arg-type]
                timezone_id=timezone_id,
                locale="en-US",
            )
            context.set_default_timeout(15_000)
            try:
                yield context
            finally:
                await context.close()


def screenshot_dir() -> Path:
    path = Path(os.environ.get("POSTCALL_SCREENSHOTS") or ROOT / ".cache" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    path = screenshot_dir() / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path
