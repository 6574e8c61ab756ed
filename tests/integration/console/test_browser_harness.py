"""The browser harness itself: Debian's Chromium starts headless under Playwright, loads a page from a
real HTTP server on 127.0.0.1, runs its script, reports the viewer's time zone, and saves a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.browser import PHONE, chromium, needs_chromium, screenshot
from tests.support.http import serving

PAGE = b"""<!doctype html><meta charset=utf-8><title>harness</title>
<p id=text>&lt;script&gt;alert(1)&lt;/script&gt;</p><p id=zone></p>
<script>document.getElementById('zone').textContent = Intl.DateTimeFormat().resolvedOptions().timeZone</script>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with serving(_Page) as url:
        yield url + "/"


@needs_chromium
async def test_headless_debian_chromium_loads_a_local_page_and_saves_a_screenshot(server: str) -> None:
    async with chromium(PHONE, timezone_id="Asia/Tokyo") as browser:
        page = await browser.new_page()
        await page.goto(server)
        assert await page.inner_text("#text") == "<script>alert(1)</script>"  # escaped text stays text
        assert await page.inner_text("#zone") == "Asia/Tokyo"
        assert await page.evaluate("window.innerWidth") == PHONE["width"]
        shot = await screenshot(page, "harness")
    assert shot.read_bytes().startswith(b"\x89PNG")
