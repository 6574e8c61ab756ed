"""transcript_url through the client `python -m services.extractor` opens (open_http): a real HTTP server
on 127.0.0.1, refused by the SSRF guard unless transcript_allow_private is set; redirects not followed;
proxies from the environment not used."""

from __future__ import annotations

import contextlib
import gzip
import re
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.events import ConversationEnded, ConversationExtracted
from services.common.api import PermanentError, RetryableError
from services.common.harness import Harness, Outcome
from services.extractor.__main__ import open_http
from services.extractor.handler import Extractor
from services.extractor.settings import ExtractorSettings
from tests.unit.extractor.conftest import CALLBACK, SUPPORT_FIELDS, conversation, spec

SPEC = spec(*SUPPORT_FIELDS, triggers=(CALLBACK,))


class Server:
    """Answers every GET with `body` (or a redirect to `location`) and records the request lines."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.location: str | None = None
        self.trickle = 0.0  # seconds between the body's bytes: a hostile server holding the fetch open
        self.encoding: str | None = None  # the Content-Encoding header sent with the body (already encoded)
        self.requests: list[str] = []
        self.cookies: list[str | None] = []  # each request's Cookie header
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.requestline)
                outer.cookies.append(self.headers.get("Cookie"))
                if outer.location:
                    self.send_response(302)
                    self.send_header("Location", outer.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "session=s3cret; Path=/")
                if outer.encoding:
                    self.send_header("Content-Encoding", outer.encoding)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                if not outer.trickle:
                    with contextlib.suppress(OSError):  # the client may stop reading (too large)
                        self.wfile.write(outer.body)
                    return
                try:
                    for i in range(len(outer.body)):
                        self.wfile.write(outer.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(outer.trickle)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def platform() -> Iterator[Server]:
    event = conversation("0005")
    with Server(orjson.dumps([m.model_dump() for m in event.messages or []])) as server:
        yield server


def claim(url: str) -> ConversationEnded:
    return conversation("0005").model_copy(update={"messages": None, "transcript_url": url})


async def attempt(tmp_path: Path, event: ConversationEnded, **settings: Any) -> Outcome:
    s = ExtractorSettings(config_dir=tmp_path, **settings)
    async with open_http(s) as http:
        return await Harness(Extractor(s, lambda e: SPEC, http, llm=None).service(), burst=False).send(event)


async def run(tmp_path: Path, event: ConversationEnded, **settings: Any) -> ConversationExtracted:
    out = await attempt(tmp_path, event, **settings)
    if out.error is not None:
        raise out.error
    [extracted] = out.events
    assert isinstance(extracted, ConversationExtracted)
    return extracted


async def test_a_cookie_the_platform_sets_is_not_sent_with_the_next_fetch(tmp_path: Path, platform: Server) -> None:
    """Every transcript is fetched through one client; httpx's own would keep the platform's Set-Cookie
    and send it with every later fetch to that host."""
    s = ExtractorSettings(config_dir=tmp_path, transcript_allow_private=True)
    async with open_http(s) as http:
        service = Harness(Extractor(s, lambda e: SPEC, http, llm=None).service(), burst=False)
        for n in ("5", "6"):
            event = claim(platform.url(f"/t/{n}")).model_copy(
                update={"event_id": f"evt-{n}", "conversation_id": f"c-{n}"}
            )
            out = await service.send(event)
            assert out.error is None
    assert platform.cookies == [None, None]


async def test_a_loopback_transcript_url_is_refused_permanently_and_still_says_failed(
    tmp_path: Path, platform: Server
) -> None:
    out = await attempt(tmp_path, claim(platform.url("/t/5")))
    assert isinstance(out.error, PermanentError)
    assert re.search(r"refused by the SSRF guard.*127\.0\.0\.1 \(loopback\)", str(out.error))
    assert platform.requests == []  # refused before a connection was opened
    [event] = out.events
    failed = event.extraction  # type: ignore[attr-defined]
    assert failed.status == "failed" and "loopback" in failed.reason


async def test_a_loopback_transcript_url_is_fetched_when_private_addresses_are_allowed(
    tmp_path: Path, platform: Server
) -> None:
    out = await run(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True)
    assert platform.requests == ["GET /t/5 HTTP/1.1"]
    assert out.extraction.status == "ok"
    assert out.extraction.fields["customer_name"].value == "Tom Becker"


async def test_a_redirect_to_the_metadata_endpoint_is_not_followed(tmp_path: Path, platform: Server) -> None:
    platform.location = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(PermanentError, match="HTTP 302"):
        await run(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True)
    assert platform.requests == ["GET /t/5 HTTP/1.1"]


async def test_a_proxy_from_the_environment_is_not_used(
    tmp_path: Path, platform: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(b"[]") as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url(""))
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        out = await run(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True)
    assert proxy.requests == []
    assert platform.requests == ["GET /t/5 HTTP/1.1"]
    assert out.extraction.fields["customer_name"].value == "Tom Becker"


@pytest.mark.timeout(60)
async def test_a_server_trickling_the_transcript_is_cut_at_one_overall_deadline(
    tmp_path: Path, platform: Server
) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the fetch as a whole has one deadline."""
    platform.trickle = 0.2
    settings = {"transcript_allow_private": True, "transcript_timeout_seconds": 1.0}
    with pytest.raises(RetryableError, match=r"transcript_url did not finish within 1s"):
        await run(tmp_path, claim(platform.url("/t/5")), **settings)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_a_compressed_transcript_is_read(tmp_path: Path, platform: Server, encoding: str, encode: Any) -> None:
    platform.body, platform.encoding = encode(platform.body), encoding
    out = await run(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True)
    assert out.extraction.fields["customer_name"].value == "Tom Becker"


async def test_a_compressed_body_that_inflates_past_the_limit_is_refused_without_ever_holding_it(
    tmp_path: Path, platform: Server
) -> None:
    """200 KB of gzip that inflates to 200 MiB: httpx inflated each 64 KiB network chunk whole, 64 MiB at a
    time (143 MiB traced for one fetch; a few such records in flight were over the pod's 1 GiB, and after
    the restart they were read again)."""
    platform.body, platform.encoding = gzip.compress(b"\0" * (200 * 1024 * 1024), 9), "gzip"
    tracemalloc.start()
    try:
        out = await attempt(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True,
                            transcript_max_bytes=1024 * 1024)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(out.error, PermanentError) and "transcript too large" in str(out.error)
    assert peak < 24 * 1024 * 1024


async def test_a_compressed_body_that_does_not_decode_is_permanent(tmp_path: Path, platform: Server) -> None:
    """A corrupt gzip body was httpx's DecodingError, neither a timeout nor a transport error: an unknown
    exception, retried through every tier though the same bytes fail the same way."""
    platform.body, platform.encoding = b"\x1f\x8b\x08\x00 this is not gzip at all", "gzip"
    out = await attempt(tmp_path, claim(platform.url("/t/5")), transcript_allow_private=True)
    assert isinstance(out.error, PermanentError) and "does not decode" in str(out.error)
