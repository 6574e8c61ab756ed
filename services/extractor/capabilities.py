"""What an OpenAI-compatible endpoint can do, probed once at start, never guessed per record.

    structured output   json_schema (response_format json_schema, strict), else json_object with a
                        schema (llama-cpp-python's server), else a forced tool call, else none: the
                        schema is written into the prompt and the answer validated and repaired
    answer cap          max_tokens, or max_completion_tokens where the endpoint refuses max_tokens
                        (OpenAI's reasoning models on Azure OpenAI or behind a gateway: 400
                        unsupported_parameter); api.openai.com always gets max_completion_tokens
    context window      llama.cpp's /props (n_ctx per slot), vLLM's /v1/models (max_model_len)
    tokenizer           llama.cpp's and vLLM's POST /tokenize, to count a long prompt exactly
    schema keywords     format (date, time, date-time), pattern (E.164, email) and maxLength in the
                        schema: llama.cpp compiles them into its grammar; other servers get
                        descriptions only (OpenAI's strict mode refuses some keywords)

Configuration wins over the probe (LlmSettings.structured_output, context_tokens). api.openai.com is
not probed: it has json_schema, and a probe there costs money. A probe that cannot reach the endpoint
assumes json_schema and says so: the endpoint may come up later (it often starts after the extractor),
and llm.py probes it again until one reaches it.

A structured-output probe answered "this request is invalid" (a 4xx, or a 500 whose body is a
validation error, as llama-cpp-python's server answers an unknown response_format.type) moves to the
next mode. When every mode is refused the endpoint's configuration is wrong for us: `problem` says why,
it is logged at start, and every extraction fails with it on its record (never an outage that pauses
the topic) until llm.py, probing again at most every 5 s, finds the endpoint fixed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
import openai
from openai.types.chat import ChatCompletion

from services.common.errors import redact
from services.extractor.settings import COUNT_SECONDS, LlmSettings

log = logging.getLogger("postcall.extractor.llm")
Mode = Literal["json_schema", "json_object", "tools", "prompt"]
AnswerCap = Literal["max_tokens", "max_completion_tokens"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "tools")
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["ok"],
    "properties": {"ok": {"type": "boolean"}},
}
_VALIDATION = re.compile(
    r"validation error|input should be|field required|extra (?:inputs|fields) (?:are )?not permitted|unsupported|"
    r"not supported|must be one of|unrecogni[sz]ed|unknown (?:field|parameter|argument)|"
    r"invalid (?:request|value|type|parameter|argument|schema|json schema|response_format)|response_format|"
    r"param(?:eter)? requires|requires (?:the )?--?[\w-]+ (?:flag|option)",
    re.I,
)
_AUTH_OR_LIMIT = (401, 403, 404, 408, 409, 429)
# OpenAI's (and Azure OpenAI's) answer to max_tokens for a reasoning model: "Unsupported parameter: 'max_tokens'
# is not supported with this model. Use 'max_completion_tokens' instead." (code unsupported_parameter)
_MAX_TOKENS = re.compile(r"\bmax_tokens\b")
# the refusal's words, not a mention of max_completion_tokens: vLLM's "'max_tokens' or 'max_completion_tokens' is
# too large: ..." is a context overflow (it takes both names)
_TAKES_OTHER = re.compile(r"unsupported|not supported", re.I)


def refuses_max_tokens(body: str) -> bool:
    """The endpoint's error says it takes max_completion_tokens, not max_tokens."""
    return _MAX_TOKENS.search(body) is not None and _TAKES_OTHER.search(body) is not None


def request_invalid(status: int | None, body: str) -> bool:
    """The endpoint says the request itself is wrong: a 4xx (but not auth, model, timeout or rate
    limit, which say something about the endpoint), or a 500 whose body is a validation error."""
    if status is None:
        return False
    if 400 <= status < 500:
        return status not in _AUTH_OR_LIMIT
    # a 500 only: llama-cpp-python's answer to a request it cannot validate; a 502, 503 or 504 is a gateway or a
    # server that is down or busy, whatever its words (retried, and probed again), never a configuration error
    return status == 500 and _VALIDATION.search(body) is not None


def error_body(exc: openai.APIError) -> str:
    return f"{exc.code or ''} {exc.type or ''} {exc.message}".strip()


def said(exc: openai.APIError, settings: LlmSettings, limit: int) -> str:
    """The endpoint's error message as a record or log may show it: cut to `limit`, and without the API
    key or its Authorization value (a gateway may echo them: "invalid api key sk-...")."""
    return redact(exc.message, settings.secrets(), limit)


@dataclass(frozen=True)
class Capabilities:
    mode: Mode = "json_schema"
    context_tokens: int | None = None
    tokenize_url: str | None = None
    schema_keywords: bool = False
    server: str = "unknown"
    problem: str | None = None  # a configuration error: every extraction fails with it
    notes: tuple[str, ...] = field(default=())
    reached: bool = True  # False: the probe got no answer on the mode and assumed it (llm.py probes again)
    answer_cap: AnswerCap = "max_tokens"  # the request key of the answer's token cap

    def describe(self) -> str:
        parts = [f"server {self.server}", f"structured output {self.mode}"]
        parts.append(f"context {self.context_tokens} tokens" if self.context_tokens else "context unknown")
        parts.append("tokenizer" if self.tokenize_url else "no tokenizer")
        if self.schema_keywords:
            parts.append("format/pattern in the grammar")
        if self.answer_cap != "max_tokens":
            parts.append(self.answer_cap)
        return ", ".join(parts)


def root_of(base_url: str) -> str:
    """http://host:8080/v1 -> http://host:8080 (llama.cpp and vLLM serve /props and /tokenize there)."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


def public_url(base_url: str | None) -> str:
    """The endpoint as it may be shown on a record or in a log: no credentials, no query."""
    if base_url is None:
        return "https://api.openai.com/v1"
    url = httpx.URL(base_url)
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


async def probe(client: openai.AsyncOpenAI, settings: LlmSettings, model: str) -> Capabilities:
    if settings.base_url is None:
        mode = "json_schema" if settings.structured_output == "auto" else settings.structured_output
        return Capabilities(mode=mode, context_tokens=settings.context_tokens, server="openai")
    notes: list[str] = []
    server, context, tokenize_url, keywords = await _server_facts(settings, notes)
    if settings.context_tokens is not None:
        context = settings.context_tokens
    if not settings.tokenizer:
        tokenize_url = None
    if settings.structured_output != "auto":
        return Capabilities(settings.structured_output, context, tokenize_url, keywords, server, None, tuple(notes))
    refused: list[str] = []
    cap: AnswerCap = "max_tokens"
    modes = list(MODES)
    while modes:
        mode = modes[0]
        try:
            await client.post("/chat/completions", body=probe_request(model, mode, cap), cast_to=ChatCompletion)
        except openai.APIStatusError as exc:
            if request_invalid(exc.status_code, error_body(exc)):
                if cap == "max_tokens" and refuses_max_tokens(error_body(exc)):
                    cap = "max_completion_tokens"  # the same mode again, asked the way it takes
                    notes.append("the endpoint refuses max_tokens: max_completion_tokens is sent")
                    continue
                refused.append(f"{mode}: HTTP {exc.status_code} {said(exc, settings, 200)}")
                modes.pop(0)
                continue
            # e.g. 503 while llama-server loads its model: nothing learnt, probed again (llm.py)
            notes.append(f"probe answered HTTP {exc.status_code} ({said(exc, settings, 120)}); assuming {mode} "
                         "until it answers")  # fmt: skip
            return Capabilities(mode, context, tokenize_url, keywords, server, None, tuple(notes), False, cap)
        except openai.APIError as exc:
            notes.append(f"probe could not reach the endpoint ({type(exc).__name__}); assuming {mode} until "
                         "it answers")  # fmt: skip
            return Capabilities(mode, context, tokenize_url, keywords, server, None, tuple(notes), False, cap)
        notes.extend(f"refused {r}" for r in refused)
        return Capabilities(mode, context, tokenize_url, keywords, server, None, tuple(notes), True, cap)
    problem = "the LLM endpoint refuses every structured-output request: " + "; ".join(refused)
    return Capabilities("prompt", context, tokenize_url, keywords, server, problem[:600], tuple(notes), True, cap)


def probe_request(model: str, mode: Mode, cap: AnswerCap = "max_tokens") -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": 'Answer {"ok": true} as JSON.'}],
        cap: 8,
        "temperature": 0,
    }
    return {**request, **structured(mode, PROBE_SCHEMA)}


def structured(mode: Mode, schema: dict[str, Any]) -> dict[str, Any]:
    """The request keys that ask for an answer shaped by `schema` in this mode."""
    if mode == "json_schema":
        json_schema = {"name": "extraction", "strict": True, "schema": schema}
        return {"response_format": {"type": "json_schema", "json_schema": json_schema}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if mode == "tools":
        function = {"name": "extraction", "description": "Record what the conversation says.", "parameters": schema}
        return {"tools": [{"type": "function", "function": function}],
                "tool_choice": {"type": "function", "function": {"name": "extraction"}}}  # fmt: skip
    return {}


async def _server_facts(settings: LlmSettings, notes: list[str]) -> tuple[str, int | None, str | None, bool]:
    """(server, context tokens, tokenize URL, schema keywords honoured) from llama.cpp's /props or the
    model list; what cannot be read stays unknown."""
    assert settings.base_url is not None
    root = root_of(settings.base_url)
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    async with httpx.AsyncClient(timeout=5.0, trust_env=False, headers=headers) as http:
        props = await _get_json(http, f"{root}/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            general = props.get("default_generation_settings") or {}
            n_ctx = general.get("n_ctx") or cast(dict[str, Any], general.get("params") or {}).get("n_ctx")
            return "llama.cpp", n_ctx if isinstance(n_ctx, int) else None, f"{root}/tokenize", True
        models = await _get_json(http, f"{settings.base_url.rstrip('/')}/models")
        data = models.get("data") if isinstance(models, dict) else None
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        if isinstance(first.get("max_model_len"), int):
            tokenize = f"{root}/tokenize" if await _tokenizes(http, f"{root}/tokenize", first.get("id")) else None
            return "vllm", first["max_model_len"], tokenize, False
        if first:
            notes.append("the model list says nothing of the context window")
        return "openai-compatible", None, None, False


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    try:
        r = await http.get(url)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def _tokenizes(http: httpx.AsyncClient, url: str, model: Any) -> bool:
    try:
        r = await http.post(url, json={"model": model, "prompt": "hello"})
        return r.status_code == 200 and isinstance(r.json().get("tokens"), list)
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


async def count_tokens(
    http: httpx.AsyncClient, url: str, text: str, model: str, *, seconds: float = COUNT_SECONDS
) -> int | None:
    """Tokens of `text` by the server's own tokenizer (llama.cpp: content; vLLM: prompt), or None; None too
    past `seconds` in all (httpx's timeout bounds each read: an answer that trickles in would hold the record
    until the handler's timeout, on every retry)."""
    try:
        async with asyncio.timeout(seconds):
            r = await http.post(url, json={"content": text, "prompt": text, "model": model, "add_special": False})
            body = r.json() if r.status_code == 200 else None  # an error's body may be a proxy's page
    except (httpx.HTTPError, ValueError, TimeoutError):
        return None
    if not isinstance(body, dict):
        return None
    tokens, count = body.get("tokens"), body.get("count")
    n = len(tokens) if isinstance(tokens, list) else count if type(count) is int else None
    # a tokenizer gives at most one token per byte (4 per character): a larger count would cut the transcript
    # to almost nothing (llm.py _counted refits it by characters per token)
    return n if n is not None and 0 <= n <= 4 * len(text) else None
