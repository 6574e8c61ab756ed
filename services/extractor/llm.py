"""The `openai` provider: one chat-completions request per conversation with strict structured output,
validated by a pydantic model built from the spec, and one repair round when the answer is invalid.

Vendor errors are mapped here, at the edge:

    429, 5xx, timeouts, connection errors      -> RetryableError (retry_after from a 429's or 503's
                                                  Retry-After, at most runtime.retry_after_cap_seconds)
    401, 403, 404 (key, permission, model)     -> RetryableError: the endpoint is misconfigured for every
                                                  record alike; pausing beats dead-lettering the stream
    any of the above, N times in a row         -> the circuit opens: DependencyUnavailable (pause)
    context too long, other 4xx, refusal,
    output still invalid after the repair      -> ExtractionFailed (permanent; malformed model output
                                                  will not get better by retrying the same request)

The client is built with max_retries=0: the runtime is the one layer that retries.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import openai
import orjson
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from schemas.agents import ExtractionSpec
from schemas.events import ConversationEnded, Extraction, Message, Usage
from services.common.errors import (
    DependencyUnavailable,
    PermanentError,
    PostcallError,
    RetryableError,
    parse_retry_after,
)
from services.extractor import answer, prompt
from services.extractor.circuit import CircuitBreaker
from services.extractor.metrics import LLM_COST, LLM_DURATION, LLM_REQUESTS, LLM_TOKENS, TRUNCATED
from services.extractor.settings import CircuitSettings, LlmSettings
from services.extractor.transcript import Fitted, fit_budget

PROVIDER = "openai"
_CONTEXT_TOO_LONG = re.compile(
    r"context.length|context.size|context.window|maximum context|too many tokens|prompt is too long", re.I
)


class ExtractionFailed(PermanentError):
    """Raised when the model cannot produce a valid answer for this conversation (never will)."""

    def __init__(self, message: str, *, usage: Usage | None = None, truncated: bool = False) -> None:
        super().__init__(message)
        self.usage = usage or Usage()
        self.truncated = truncated


@dataclass(frozen=True)
class Compiled:
    schema: dict[str, Any]
    model: type[BaseModel]
    text: str


class OpenAIProvider:
    name = PROVIDER

    def __init__(
        self,
        clients: openai.AsyncOpenAI | Sequence[openai.AsyncOpenAI],
        settings: LlmSettings,
        circuit: CircuitSettings,
        country_code: str,
        *,
        retry_after_cap: float,
    ) -> None:
        # several clients share the load: each has its own connection pool, and a pool's cost per
        # request grows with its number of connections (httpcore checks every one on each request)
        self._clients = itertools.cycle([clients] if isinstance(clients, openai.AsyncOpenAI) else list(clients))
        self._settings = settings
        self._country_code = country_code
        self._cap = retry_after_cap  # one header must not pause extraction (or skip retry tiers) for a day
        self.breaker = CircuitBreaker(PROVIDER, circuit)
        self._compiled: dict[str, Compiled] = {}

    def fit(self, spec: ExtractionSpec, messages: list[Message]) -> Fitted:
        model = spec.model or self._settings.model
        fitted = fit_budget(messages, self._settings.budget(model), model)
        if fitted.truncated:
            TRUNCATED.labels(model).inc()
        return fitted

    async def extract(
        self, spec: ExtractionSpec, event: ConversationEnded, fitted: Fitted, local_end: datetime
    ) -> Extraction:
        model = spec.model or self._settings.model
        compiled = self._compile(spec)
        facts = prompt.conversation_facts(event, local_end)
        request = prompt.messages(compiled.text, facts, fitted.text, fitted.truncated)
        parsed, usage = await self._answer(model, request, compiled, fitted.truncated)
        return Extraction(
            status="ok",
            provider=PROVIDER,
            model=model,
            config_revision=spec.config_revision,
            truncated=fitted.truncated,
            reason=fitted.reason,
            usage=usage,
            **answer.read_answer(parsed, spec),
        )

    async def _answer(
        self, model: str, request: list[dict[str, str]], compiled: Compiled, truncated: bool
    ) -> tuple[BaseModel, Usage]:
        """One call, and one repair round that shows the model its own answer and the validation error."""
        usage = Usage()
        for attempt in (1, 2):
            content, usage = await self._call(model, request, compiled.schema, usage, truncated)
            try:
                parsed = _parse(content, compiled.model)
            except ValueError as exc:
                LLM_REQUESTS.labels(PROVIDER, model, "invalid").inc()
                if attempt == 2:
                    raise ExtractionFailed(
                        f"model output invalid after one repair: {_short(exc)}", usage=usage, truncated=truncated
                    ) from exc
                request = prompt.repair(request, content, str(exc))
                continue
            LLM_REQUESTS.labels(PROVIDER, model, "ok").inc()
            return parsed, usage
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _compile(self, spec: ExtractionSpec) -> Compiled:
        """Schema, validator and prompt text once per configuration revision (they are the cached prefix)."""
        key = spec.model_dump_json()
        if (found := self._compiled.get(key)) is None:
            if len(self._compiled) >= 512:
                self._compiled.clear()
            found = Compiled(answer.json_schema(spec), answer.answer_model(spec, self._country_code),
                             prompt.describe_spec(spec))  # fmt: skip
            self._compiled[key] = found
        return found

    async def _call(
        self, model: str, messages: list[dict[str, str]], schema: dict[str, Any], usage: Usage, truncated: bool
    ) -> tuple[str, Usage]:
        try:
            self.breaker.before_call()
        except DependencyUnavailable:
            LLM_REQUESTS.labels(PROVIDER, model, "circuit_open").inc()
            raise
        started = time.monotonic()
        try:
            # the client's documented raw-request path: `chat.completions.create` runs every request
            # through its typed-parameter transform, a millisecond of CPU per call at hundreds in flight
            completion = await next(self._clients).post(
                "/chat/completions", body=self._request(model, messages, schema), cast_to=ChatCompletion
            )
        except openai.APIError as exc:
            raise self._failure(exc, model, usage, truncated) from exc
        except BaseException:
            self.breaker.release()
            raise
        finally:
            LLM_DURATION.labels(PROVIDER, model).observe(time.monotonic() - started)
        self.breaker.success()
        usage = self._account(model, completion, usage)
        return _content(completion, model, usage, truncated), usage

    def _request(self, model: str, messages: list[dict[str, str]], schema: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "strict": True, "schema": schema},
            },
        }
        if self._settings.temperature is not None:
            request["temperature"] = self._settings.temperature
        if self._settings.max_output_tokens is not None:
            request["max_completion_tokens"] = self._settings.max_output_tokens
        return request

    def _failure(self, exc: openai.APIError, model: str, usage: Usage, truncated: bool) -> PostcallError:
        status = getattr(exc, "status_code", None)
        if status is not None and status < 500 and status not in (401, 403, 404, 408, 409, 429):
            self.breaker.success()  # it answered: the endpoint is up, this request is the problem
            too_long = _CONTEXT_TOO_LONG.search(f"{exc.code} {exc.type} {exc.message}")
            LLM_REQUESTS.labels(PROVIDER, model, "context_too_long" if too_long else "client_error").inc()
            what = "context too long" if too_long else f"HTTP {status}"
            return ExtractionFailed(f"{what}: {exc.message[:300]}", usage=usage, truncated=truncated)
        outcome = _outcome(exc, status)
        LLM_REQUESTS.labels(PROVIDER, model, outcome).inc()
        response = getattr(exc, "response", None)
        retry_after = None if response is None else parse_retry_after(status or 0, response.headers, self._cap)
        message = f"LLM {outcome.replace('_', ' ')}" + (f" (HTTP {status})" if status else "")
        if self.breaker.failure():
            cooldown = self.breaker.cooldown
            return DependencyUnavailable(f"{message}; circuit open", retry_after=max(retry_after or 0, cooldown))
        return RetryableError(message, retry_after=retry_after)

    def _account(self, model: str, completion: ChatCompletion, usage: Usage) -> Usage:
        u = completion.usage
        if u is None:
            return usage
        details = u.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        cost = self._cost(model, u.prompt_tokens, cached, u.completion_tokens)
        for kind, n in (("prompt", u.prompt_tokens), ("completion", u.completion_tokens), ("cached", cached)):
            LLM_TOKENS.labels(PROVIDER, model, kind).inc(n)
        LLM_COST.labels(PROVIDER, model).inc(cost)
        return Usage(
            prompt_tokens=usage.prompt_tokens + u.prompt_tokens,
            completion_tokens=usage.completion_tokens + u.completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens + cached,
            cost_usd=round(usage.cost_usd + cost, 8),
        )

    def _cost(self, model: str, prompt_tokens: int, cached: int, completion_tokens: int) -> float:
        price = self._settings.prices.get(model)
        if price is None:
            return 0.0
        cached_price = price.input if price.cached_input is None else price.cached_input
        fresh = max(prompt_tokens - cached, 0)
        return (fresh * price.input + cached * cached_price + completion_tokens * price.output) / 1_000_000


def _outcome(exc: openai.APIError, status: int | None) -> str:
    if status is None:
        return "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
    return "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"


def _content(completion: ChatCompletion, model: str, usage: Usage, truncated: bool) -> str:
    if not completion.choices:
        return ""
    choice = completion.choices[0]
    refusal = choice.message.refusal
    if refusal or choice.finish_reason == "content_filter":
        LLM_REQUESTS.labels(PROVIDER, model, "refused").inc()
        why = (refusal or "content filter")[:300]
        raise ExtractionFailed(f"model refused: {why}", usage=usage, truncated=truncated)
    return choice.message.content or ""


def _parse(content: str, model: type[BaseModel]) -> BaseModel:
    """JSON (a Markdown code fence around it is tolerated) validated by the spec's model."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:20]]
        raise ValueError("\n".join(lines)) from exc


def _short(exc: Exception) -> str:
    return str(exc).replace("\n", "; ")[:300]
