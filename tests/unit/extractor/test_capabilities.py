"""Edges of the endpoint's probed abilities that need no server (the probe itself: tests/integration)."""

from __future__ import annotations

import httpx
import pytest

from services.extractor.capabilities import count_tokens


@pytest.mark.parametrize(
    ("status", "body", "count"),
    [
        (200, b'{"tokens": [1, 2, 3]}', 3),  # llama.cpp
        (200, b'{"count": 4, "tokens": null}', 4),  # vLLM's count
        (502, b"<html><h1>502 Bad Gateway</h1></html>", None),  # a proxy's page in front of the server
        (401, b"Unauthorized", None),
        (500, b"[]", None),
    ],
)
async def test_a_token_count_the_server_cannot_give_is_none_never_an_exception(
    status: int, body: bytes, count: int | None
) -> None:
    """Counting is an optimisation: an answer that is not a count leaves the transcript as estimated."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        assert await count_tokens(http, "http://llama:8080/tokenize", "hello there", "m") == count
