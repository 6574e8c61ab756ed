"""Transcripts: claim-check bodies (JSON or text), the size limit while streaming, fetch errors, and the
token budget that keeps the beginning and the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from schemas.events import Message
from services.common.errors import PermanentError, RetryableError
from services.common.ssrf import GuardedTransport
from services.extractor.transcript import estimate_tokens, fetch_transcript, fit_budget, parse_transcript


def test_json_messages_accept_the_platforms_spellings() -> None:
    body = orjson.dumps({"messages": [
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "message": "Call me back tomorrow."},
        {"role": "tool", "content": ""},
        {"role": "Agent", "text": "Sure."},
    ]})  # fmt: skip
    assert [(m.role, m.text) for m in parse_transcript(body)] == [
        ("agent", "How can I help?"),
        ("customer", "Call me back tomorrow."),
        ("agent", "Sure."),
    ]


def test_a_turns_text_is_its_first_spelling_that_holds_text_and_content_parts_are_read() -> None:
    """A null `text` hid the `message` or `content` beside it, and `content` as a list of parts (the chat
    format: [{type: text, text}]) was no text: either turn was dropped without a word."""
    body = orjson.dumps([
        {"role": "assistant", "text": None, "content": "How can I help?"},
        {"role": "user", "text": None, "message": "Call me back tomorrow."},
        {"role": "assistant", "content": [{"type": "text", "text": "Sure, "}, {"type": "image_url"},
                                          {"type": "text", "text": "at what time?"}]},
        {"role": "tool", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ])  # fmt: skip
    assert [(m.role, m.text) for m in parse_transcript(body)] == [
        ("agent", "How can I help?"),
        ("customer", "Call me back tomorrow."),
        ("agent", "Sure, at what time?"),
    ]


def test_plain_text_turns_by_speaker_label() -> None:
    body = b"Agent: Thanks for calling.\nCustomer: My app is down\nsince this morning.\n\nAI: Sorry to hear that."
    assert [(m.role, m.text) for m in parse_transcript(body)] == [
        ("agent", "Thanks for calling."),
        ("customer", "My app is down since this morning."),
        ("agent", "Sorry to hear that."),
    ]


@pytest.mark.parametrize(
    "body",
    [b'[{"role": "agent", "text": "Hello, Acme support."}, {"role": "user", "text": "Hi, call me back."}]',
     b"Agent: Hello, Acme support.\nCustomer: Hi, call me back.\n"],
    ids=["json", "text"],
)  # fmt: skip
def test_a_body_starting_with_a_byte_order_mark_is_read_as_without_it(body: bytes) -> None:
    """Windows and .NET writers start UTF-8 with a byte order mark. A JSON body was then read as text, one
    customer turn of raw JSON (the agent's words the customer's); a text body's first turn lost its label
    and went to the customer."""
    expected = [Message(role="agent", text="Hello, Acme support."), Message(role="customer", text="Hi, call me back.")]
    assert parse_transcript(b"\xef\xbb\xbf" + body) == parse_transcript(body) == expected


def test_a_body_that_is_neither_json_nor_text_is_permanent() -> None:
    with pytest.raises(PermanentError):
        parse_transcript(b"[{not json")
    with pytest.raises(PermanentError):
        parse_transcript(b"\xff\xfe\x00binary")


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"role": "user", "text": "hi", "start_seconds": -1}, r"message 0 is malformed: start_seconds: .*greater than"),
        ({"role": "user", "text": "hi", "end_seconds": "soon"}, r"message 0 is malformed: end_seconds: "),
    ],
)
def test_a_message_pydantic_rejects_is_permanent_with_the_reason(item: dict[str, object], reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        parse_transcript(orjson.dumps({"messages": [item]}))


def long_call(turns: int) -> list[Message]:
    return [
        Message(role="customer" if i % 2 else "agent", text=f"turn {i}: " + "words and more words " * 20)
        for i in range(turns)
    ]


def test_a_transcript_within_budget_is_kept_whole() -> None:
    messages = long_call(10)
    fitted = fit_budget(messages, 100_000, "gpt-4o-mini")
    assert not fitted.truncated and fitted.reason is None
    assert fitted.text.count("\n") == 9


def test_over_budget_keeps_the_beginning_and_the_end_and_says_so() -> None:
    messages = long_call(400)
    fitted = fit_budget(messages, 2_000, "small-model")
    assert fitted.truncated
    assert estimate_tokens(fitted.text) <= 2_000 + 50  # the marker line
    assert fitted.text.startswith("[0] agent: turn 0:")
    assert fitted.text.rstrip().endswith("turn 399: " + ("words and more words " * 20).strip())
    assert "turn 200:" not in fitted.text
    assert "cut here to fit the budget" in fitted.text
    assert fitted.reason is not None and "2000-token budget of small-model" in fitted.reason


def test_one_huge_message_is_cut_in_its_middle() -> None:
    text = "START " + "x" * 200_000 + " END"
    fitted = fit_budget([Message(role="customer", text=text)], 1_000, "m")
    assert fitted.truncated
    assert "START" in fitted.text and fitted.text.endswith("END")
    assert len(fitted.text) < 4_200


def client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_a_body_over_the_limit_stops_the_fetch_while_streaming() -> None:
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1024

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=chunks()))
    async with client(transport) as http:
        with pytest.raises(PermanentError, match="transcript too large"):
            await fetch_transcript(http, "https://platform.example/t/1", max_bytes=10_000, timeout=5)
    assert len(sent) < 20  # it stopped reading, it did not download everything first


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, headers={"content-length": "999999"}, content=b"[]"))
    async with client(transport) as http:
        with pytest.raises(PermanentError, match="transcript too large"):
            await fetch_transcript(http, "https://platform.example/t/1", max_bytes=10_000, timeout=5)


@pytest.mark.parametrize(("status", "error"), [(503, RetryableError), (429, RetryableError), (404, PermanentError)])
async def test_fetch_status_decides_retry_or_not(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(status))
    async with client(transport) as http:
        with pytest.raises(error):
            await fetch_transcript(http, "https://platform.example/t/1", max_bytes=10_000, timeout=5)


async def test_fetch_timeouts_are_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with client(httpx.MockTransport(slow)) as http:
        with pytest.raises(RetryableError, match="timed out"):
            await fetch_transcript(http, "https://platform.example/t/1", max_bytes=10_000, timeout=5)


async def test_only_http_urls_are_fetched() -> None:
    async with client(httpx.MockTransport(lambda r: httpx.Response(200))) as http:
        with pytest.raises(PermanentError):
            await fetch_transcript(http, "file:///etc/passwd", max_bytes=10_000, timeout=5)


async def test_an_address_the_ssrf_guard_refuses_is_permanent_and_says_why() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]  # a public-looking name that resolves to the metadata endpoint

    transport = GuardedTransport(allow_private=True, limits=httpx.Limits(max_connections=1), resolver=resolver)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(PermanentError, match=r"refused by the SSRF guard.*cloud metadata endpoint"):
            await fetch_transcript(http, "http://transcripts.example/t/1", max_bytes=10_000, timeout=5)
