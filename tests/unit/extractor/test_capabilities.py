"""Edges of the endpoint's probed abilities that need no server (the probe itself: tests/integration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from services.extractor.capabilities import count_tokens, refuses_max_tokens


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


@pytest.mark.parametrize(
    "body",
    [b'{"count": 1000000}', b'{"count": true}', b'{"count": -3}', b'{"tokens": [' + b"1," * 99 + b"1]}"],
    ids=["a-million", "true", "negative", "100-for-11-characters"],
)
async def test_a_token_count_no_tokenizer_can_give_is_none(body: bytes) -> None:
    """A tokenizer gives at most one token per byte of UTF-8 (4 per character), never a negative count or a
    boolean. A count of a million made _counted cut a 30,000-character transcript near a 6,000-token budget to
    its first and last 90 characters (characters per token 0.03): the model saw almost no conversation."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        assert await count_tokens(http, "http://llama:8080/tokenize", "hello there", "m") is None


async def test_a_token_count_that_trickles_in_past_its_bound_is_none() -> None:
    """httpx's timeout bounds each read: an answer sent a byte at a time (a proxy in front of the server)
    held the record until the handler's timeout, then its retries did the same. Counting is an optimisation:
    past its bound the transcript stays as estimated."""

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(40):
            await asyncio.sleep(0.05)
            yield b" "
        yield b'{"tokens": [1, 2]}'

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=trickle()))
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport) as http:
        assert await count_tokens(http, "http://llama:8080/tokenize", "hello there", "m", seconds=0.3) is None
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("body", "refuses"),
    [
        # OpenAI's and Azure OpenAI's answer for a reasoning model (code, type, message as error_body joins them)
        (
            "unsupported_parameter invalid_request_error Unsupported parameter: 'max_tokens' is not supported with "
            "this model. Use 'max_completion_tokens' instead.",
            True,
        ),
        ("Unsupported parameter: max_tokens", True),
        # a cap the model cannot give, or a bad value: the parameter itself is taken
        ("max_tokens is too large: 16385. This model supports at most 16384 completion tokens", False),
        ("max_tokens must be at least 1, got 0.", False),
        # vLLM's context overflow names both keys (it takes either)
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is "
            "4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).",
            False,
        ),
        ("Unsupported value: 'max_completion_tokens' does not support 0 with this model.", False),
        ("1 validation error for CreateChatCompletionRequest response_format.type", False),
    ],
)
def test_an_endpoint_that_takes_max_completion_tokens_is_told_by_its_refusal(body: str, refuses: bool) -> None:
    assert refuses_max_tokens(body) is refuses
