"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks (no mocks of the client).

It speaks `POST /v1/chat/completions` over HTTP/1.1 with keep-alive, in its own thread and event loop,
so the real `openai.AsyncOpenAI` client talks to it exactly as to vLLM or OpenAI. The answer is computed
from the request's own json_schema, filled from a scripted dict; modes make it misbehave:

    ok              the scripted answer (unscripted values are null)
    rate_limit      429 with Retry-After: <retry_after>
    error           500
    slow            answers after <slow_seconds> (past the client timeout)
    trickle         the answer's headers at once, then its body after <trickle_bytes> spaces sent one every
                    <trickle_seconds> (each read is quick, the whole answer slow: a gateway keeping the
                    connection alive while its upstream works)
    malformed       content that is not JSON
    schema_break    JSON that breaks the schema (the first field's value is an object)
    refusal         message.refusal set, no content
    context_length  400 context_length_exceeded
    loading         503 "Loading model" to every request, as llama-server answers while it loads the model
    error_body      200 whose body is an error object, not a completion (what some gateways answer)
    gateway_page    200 whose body is an HTML page, not JSON (a proxy's error page)
    echo_key        <echo_status> (400) whose error message echoes the request's Authorization header, as a
                    gateway that refuses the key may answer
    down            connection refused (the listening socket is closed; `up()` reopens the same port)

`refuse_json_schema` makes it answer like llama-cpp-python's server (0.3.36): response_format
json_schema is refused with HTTP 500 and a validation error; json_object with a `schema` is answered.

`refuse_max_tokens` makes it answer like OpenAI's and Azure OpenAI's reasoning models: a request with
`max_tokens` is refused with 400 unsupported_parameter ("Use 'max_completion_tokens' instead.").

A request for a model in `unknown_models` is answered 404 model_not_found, as api.openai.com answers it.
A request body over `max_body` bytes is answered 413 with nginx's page, as a proxy in front of the server
with a body-size limit answers it (ingress-nginx's default proxy-body-size is 1m).

A request with `tools` (the forced tool call) is answered with a tool call whose `arguments` is the answer
as JSON text, as OpenAI writes it, or with `tool_arguments = "object"` the answer itself, as a JSON object
(llama-server's builds of March 2026 until --tool-args-compat, TGI). With `content_parts`, a message's
content is a list of content parts (a "thinking" part, then the text), as Mistral's reasoning models answer,
and a refusal is an object.

`then(*modes)` queues one mode per request before falling back to `mode`; `delay` is added to every
answer (benchmarks); `usage`, when set, is every completion's usage object as given (a server's nulls,
negative or fractional counts). Every request body is kept in `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

#: written into the HTTP body as the JSON escape of a lone surrogate, half of an emoji (Python's json, which the
#: openai client parses the body with, reads it as that lone code point)
LONE = "<lone-surrogate>"
#: what nginx answers a body over client_max_body_size
TOO_LARGE_PAGE = (
    b"<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too "
    b"Large</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class Script:
    fields: dict[str, Any] = field(default_factory=dict)  # name -> value, or (value, evidence)
    dynamic: dict[str, Any] = field(default_factory=dict)
    triggers: dict[str, Any] = field(default_factory=dict)  # trigger id -> bool, or (bool, evidence)
    recipients: dict[str, str] = field(default_factory=dict)  # route id -> rule_1 ... | fallback
    summary: str | None = "The customer called; the agent helped."
    confidence: float = 0.9


class FakeLLM:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.mode = "ok"
        self.queue: deque[str] = deque()
        self.delay = 0.0
        self.slow_seconds = 30.0
        self.trickle_seconds = 0.1
        self.trickle_bytes = 30
        self._trickling = False
        self.retry_after = "7"
        self.echo_status = 400
        self._authorization = ""
        self.refuse_json_schema = False
        self.refuse_max_tokens = False
        self.unknown_models: set[str] = set()
        self.max_body: int | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_arguments = "string"
        self.content_parts = False
        self.refusal = "I'm sorry, I can't help with that request."
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-llm")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._answers: dict[bytes, str] = {}

    # ── control (from the test's thread) ─────────────────────────────────────────────────────────

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    def rescript(self, script: Script) -> None:
        """Answer from now on with `script` (answers remembered for repeated requests are forgotten)."""
        self.script = script
        self._answers.clear()

    def then(self, *modes: str) -> FakeLLM:
        self.queue.extend(modes)
        return self

    def start(self) -> FakeLLM:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def down(self) -> None:
        """Connection refused from now on (open connections are dropped too)."""
        self._call(self._close())

    def up(self) -> None:
        self._call(self._listen())

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        await self._close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    # ── HTTP/1.1 ─────────────────────────────────────────────────────────────────────────────────

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                raw = await reader.readexactly(length)
                found = re.search(rb"(?i)\r\nauthorization:[ \t]*([^\r\n]*)", head)
                self._authorization = found.group(1).decode() if found else ""
                status, headers, payload = await self._respond(orjson.loads(raw), raw)
                raw_page = isinstance(payload, bytes)
                data = payload if raw_page else orjson.dumps(payload)
                data = data.replace(LONE.encode(), b"\\ud83d")  # a lone surrogate, which orjson cannot write
                kind = "text/html" if raw_page else "application/json"
                lines = [f"HTTP/1.1 {status} X", f"Content-Type: {kind}", f"Content-Length: {len(data)}"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                if self._trickling:
                    self._trickling = False
                    await self._trickle(writer, "\r\n".join(lines), data)
                    continue
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, AttributeError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _trickle(self, writer: asyncio.StreamWriter, head: str, data: bytes) -> None:
        """The answer's headers, then its body behind spaces sent one at a time (JSON allows leading space)."""
        head = re.sub(r"Content-Length: \d+", f"Content-Length: {self.trickle_bytes + len(data)}", head)
        writer.write((head + "\r\n\r\n").encode())
        await writer.drain()
        for _ in range(self.trickle_bytes):
            await asyncio.sleep(self.trickle_seconds)
            writer.write(b" ")
            await writer.drain()
        writer.write(data)
        await writer.drain()

    async def _respond(self, body: dict[str, Any], raw: bytes = b"") -> tuple[int, dict[str, str], Any]:
        self.requests.append(body)
        if self.mode == "loading":
            return 503, {}, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        if self.refuse_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            message = (
                "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
                "'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]"
            )
            return 500, {}, {"error": {"message": message, "type": "internal_server_error", "param": None,
                                       "code": None}}  # fmt: skip
        if self.refuse_max_tokens and "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return 400, {}, {"error": {"message": message, "type": "invalid_request_error", "param": "max_tokens",
                                       "code": "unsupported_parameter"}}  # fmt: skip
        if self.max_body is not None and len(raw) > self.max_body:
            return 413, {}, TOO_LARGE_PAGE
        if body.get("model") in self.unknown_models:
            message = f"The model `{body['model']}` does not exist or you do not have access to it."
            return 404, {}, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                       "code": "model_not_found"}}  # fmt: skip
        mode = self.queue.popleft() if self.queue else self.mode
        if self.delay:
            await asyncio.sleep(self.delay)
        if mode == "rate_limit":
            return 429, {"Retry-After": self.retry_after}, _error("Rate limit reached", "rate_limit_exceeded")
        if mode == "error":
            return 500, {}, _error("The server had an error", "server_error")
        if mode == "context_length":
            message = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000."
            return 400, {}, _error(message, "context_length_exceeded")
        if mode == "echo_key":
            message = f"Invalid API key provided. Authorization: {self._authorization}"
            return self.echo_status, {}, _error(message, "invalid_api_key")
        if mode == "error_body":
            return 200, {}, _error("upstream provider timed out", "upstream_error")
        if mode == "gateway_page":
            return 200, {}, b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if mode == "trickle":
            self._trickling = True
        if mode == "refusal":
            return 200, {}, self._completion(body, None, refusal=self.refusal)
        if mode == "ok" and raw in self._answers:  # benchmarks repeat one request: answer it once
            return 200, {}, self._completion(body, self._answers[raw])
        answer = fill(body, self.script)
        if mode == "schema_break":
            _break(answer)
        content = orjson.dumps(answer).decode()
        if mode == "malformed":
            content = content[: len(content) // 2]
        elif mode == "ok" and len(self._answers) < 64:
            self._answers[raw] = content
        return 200, {}, self._completion(body, content)

    def _completion(self, request: dict[str, Any], content: str | None, refusal: str | None = None) -> dict[str, Any]:
        completion = _completion(request, content, refusal)
        if request.get("tools") and content is not None:
            arguments: Any = content
            if self.tool_arguments == "object":
                with contextlib.suppress(orjson.JSONDecodeError):  # malformed: the text as it is
                    arguments = orjson.loads(content)
            function = {"name": request["tools"][0]["function"]["name"], "arguments": arguments}
            message = completion["choices"][0]["message"]
            message["content"] = None
            message["tool_calls"] = [{"id": "call_1", "type": "function", "function": function}]
        if self.content_parts:
            message = completion["choices"][0]["message"]
            if message["content"] is not None:
                message["content"] = [{"type": "thinking", "thinking": [{"type": "text", "text": "Hm."}]},
                                      {"type": "text", "text": message["content"]}]  # fmt: skip
            if message["refusal"] is not None:
                message["refusal"] = {"reason": message["refusal"]}
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def _error(message: str, code: str) -> dict[str, Any]:
    kind = "invalid_request_error" if code == "context_length_exceeded" else code
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _completion(request: dict[str, Any], content: str | None, refusal: str | None = None) -> dict[str, Any]:
    prompt_tokens = len(orjson.dumps(request.get("messages", []))) // 4
    completion_tokens = len(content or refusal or "") // 4
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": prompt_tokens // 2},
        },
    }  # fmt: skip


# ── answers computed from the request's schema ──────────────────────────────────────────────────


def transcript_of(request: dict[str, Any]) -> list[str]:
    """The transcript lines' text (without the "[n] role:" prefix) from the last user message."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    text = user.split("Transcript:\n", 1)[-1]
    return [re.sub(r"^\[\d+\] \w+: ", "", line) for line in text.splitlines()]


def _evidence(value: Any, lines: list[str]) -> str | None:
    needle = str(value).lower()
    return next((line for line in lines if needle and needle in line.lower()), None)


def _slot(scripted: Any, lines: list[str], confidence: float) -> dict[str, Any]:
    value, evidence = scripted if isinstance(scripted, tuple) else (scripted, _evidence(scripted, lines))
    return {"value": value, "evidence": evidence if value is not None else None, "confidence": confidence}


def fill(request: dict[str, Any], script: Script) -> dict[str, Any]:
    if request.get("tools"):
        schema = request["tools"][0]["function"]["parameters"]
    else:
        shape = request["response_format"]
        schema = shape["json_schema"]["schema"] if shape["type"] == "json_schema" else shape["schema"]
    lines = transcript_of(request)
    out: dict[str, Any] = {}
    props = schema["properties"]
    for section, scripted in (("fields", script.fields), ("dynamic", script.dynamic)):
        if section in props:
            out[section] = {n: _slot(scripted.get(n), lines, script.confidence) for n in props[section]["properties"]}
    if "triggers" in props:
        out["triggers"] = {}
        for tid in props["triggers"]["properties"]:
            answer, evidence = _trigger(script.triggers.get(tid, False), lines)
            out["triggers"][tid] = {"answer": answer, "rationale": "scripted", "evidence": evidence,
                                    "confidence": script.confidence}  # fmt: skip
    if "recipients" in props:
        out["recipients"] = {
            rid: {"choice": script.recipients.get(rid, "fallback"), "rationale": "scripted"}
            for rid in props["recipients"]["properties"]
        }
    if "summary" in props:
        out["summary"] = script.summary
    return out


def _trigger(scripted: Any, lines: list[str]) -> tuple[bool, str | None]:
    if isinstance(scripted, tuple):
        return bool(scripted[0]), scripted[1]
    return bool(scripted), (lines[0] if scripted and lines else None)


def _break(answer: dict[str, Any]) -> None:
    for section in ("fields", "dynamic"):
        if answer.get(section):
            first = next(iter(answer[section]))
            answer[section][first]["value"] = {"unexpected": "object"}
            return
    answer.pop(next(iter(answer)), None)


def main() -> None:
    """`python -m tests.support.fake_llm --port 8089 --delay 1.0`: serve until killed (benchmarks run the
    server in its own process so that it does not share the measured process's CPU)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeLLM()
    fake.port, fake.delay = args.port, args.delay
    fake.start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
