"""The `openai` provider: one chat-completions request per conversation, its answer shaped by the
best structured-output mode the endpoint has (capabilities.py, probed once at start), normalised,
validated by a pydantic model built from the spec, and repaired once when invalid.

Small models and real servers misbehave in known ways, each handled here:

    an answer that loops inside a string     max_tokens is sized from the schema; an answer cut off
                                             there (or repeating itself, or longer than the record's
                                             room when the server ignores max_tokens) gets one repair
                                             round that asks for a short answer, then fails with that reason
    the context overflows (or a proxy        the transcript is shrunk to the size the server reports
    refuses the body as too large: 413)      (or by half) and the request sent once more
    a long prompt near the window            counted with the server's tokenizer, not by characters
    dates with a midnight time, national     normalised before validation, the model's raw value
    phone numbers, "4:30 PM"                 kept on the record (ExtractedValue.raw)
    raw control characters in strings        parsed leniently and dropped
    a tool call's arguments as an object,    taken as the answer, as its JSON text would be
    not as JSON text (llama-server, TGI)
    content as a list of parts (Mistral)     its text parts are the answer

Vendor errors are mapped here, at the edge:

    429, 5xx, timeouts, connection errors      -> RetryableError (retry_after from a 429's or 503's
                                                  Retry-After, at most runtime.retry_after_cap_seconds)
    a 200 that is no chat completion (a        -> RetryableError, counted by the circuit like a 5xx
    gateway's error object, a proxy's page)
    401, 403, 404 (key, permission, model)     -> RetryableError: the endpoint is misconfigured for every
                                                  record alike; pausing beats dead-lettering the stream
    404 for a model an agent names itself      -> ConfigurationError: that agent's mistake, on its records;
                                                  the other agents' extraction goes on
    any of the above, N times in a row         -> the circuit opens: DependencyUnavailable (pause)
    the request itself is invalid: another     -> ConfigurationError (permanent, on the record, never
    4xx, or a 500 whose body is a validation      counted against the circuit: the endpoint is up)
    error
    the same, in a mode assumed because the    -> RetryableError, and the endpoint is probed again
    start probe reached nothing
    context too long after one shrink,         -> ExtractionFailed (permanent; malformed model output
    refusal, output still invalid or cut off      will not get better by retrying the same request)
    after the repair

The client is built with max_retries=0: the runtime is the one layer that retries.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import openai
import orjson
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from schemas.agents import ExtractionSpec
from schemas.events import MAX_COUNT, MAX_NESTING, ConversationEnded, Extraction, Message, Usage, nested_too_deep
from schemas.topics import EXTRACTION_ROOM_BYTES
from services.common.breaker import CircuitBreaker, State
from services.common.errors import DependencyUnavailable, PermanentError, RetryableError, parse_retry_after, redact
from services.extractor import answer, prompt
from services.extractor.capabilities import (
    Capabilities,
    count_tokens,
    error_body,
    probe,
    public_url,
    refuses_max_tokens,
    request_invalid,
    said,
)
from services.extractor.capabilities import structured as structured_keys
from services.extractor.metrics import LLM_CIRCUIT_OPEN, LLM_COST, LLM_DURATION, LLM_REQUESTS, LLM_TOKENS, TRUNCATED
from services.extractor.settings import CHARS_PER_TOKEN, CircuitSettings, LlmSettings
from services.extractor.transcript import Fitted, fit_budget

PROVIDER = "openai"
log = logging.getLogger("postcall.extractor.llm")
_CONTEXT_TOO_LONG = re.compile(
    r"context.length|context.size|context.window|maximum context|too many tokens|prompt is too long", re.I
)
_TOKEN_COUNTS = re.compile(
    r"(\d+)\s*tokens?\)?\s*(?:exceeds?|>|is (?:longer|more) than).*?(\d+)\s*tokens?", re.I | re.S
)
# and lone surrogates (half an emoji, written as its JSON escape), which json reads and no UTF-8 writer writes
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
REPROBE_SECONDS = 5.0  # an endpoint the start probe could not reach is probed again at most this often
REPAIR_HEADROOM_TOKENS = 300  # the repair round's error text and instructions
COUNT_ABOVE = 0.5  # an estimate over this share of the budget is counted with the server's tokenizer
# the extracted record is the event plus its extraction, and an event may take all but EXTRACTION_ROOM_BYTES of
# what the router reads, on the promise that max_tokens caps the answer: a server may not keep it (a character
# is written in up to 4 bytes)
ANSWER_CHARS = EXTRACTION_ROOM_BYTES // 4


class ExtractionFailed(PermanentError):
    """Raised when the model cannot produce a valid answer for this conversation (never will)."""

    def __init__(self, message: str, *, usage: Usage | None = None, truncated: bool = False) -> None:
        super().__init__(message)
        self.usage = usage or Usage()
        self.truncated = truncated


class ConfigurationError(ExtractionFailed):
    """The endpoint says the request itself is invalid: a configuration error, the same for every record."""


class _AskedWrongly(Exception):
    """The endpoint refused max_tokens (and takes max_completion_tokens, asked from now on): the same call
    again at once."""


class _ContextOverflow(Exception):
    def __init__(self, message: str, usage: Usage) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Compiled:
    schema: dict[str, Any]
    model: type[BaseModel]
    text: str
    max_tokens: int


class OpenAIProvider:
    name = PROVIDER

    def __init__(
        self,
        clients: openai.AsyncOpenAI | Sequence[openai.AsyncOpenAI],
        settings: LlmSettings,
        circuit: CircuitSettings,
        country_code: str,
        capabilities: Capabilities | None = None,
        *,
        retry_after_cap: float,
    ) -> None:
        # several clients share the load: each has its own connection pool, and a pool's cost per
        # request grows with its number of connections (httpcore checks every one on each request)
        self._all = [clients] if isinstance(clients, openai.AsyncOpenAI) else list(clients)
        self._clients = itertools.cycle(self._all)
        self._settings = settings
        self._country_code = country_code
        self._cap = retry_after_cap  # one header must not pause extraction (or skip retry tiers) for a day
        # an outage pauses extraction (DependencyUnavailable) instead of failing records
        self.breaker = CircuitBreaker(circuit.policy(), on_change=_circuit_changed)
        _circuit_changed(State.CLOSED, None)
        self._compiled: dict[str, Compiled] = {}
        self.capabilities = capabilities or Capabilities(
            mode="json_schema" if settings.structured_output == "auto" else settings.structured_output,
            context_tokens=settings.context_tokens,
        )
        self._http: httpx.AsyncClient | None = None
        self._next_probe = 0.0
        self._probing = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The endpoint without credentials, as records and logs show it."""
        return public_url(self._settings.base_url)

    def describe(self) -> str:
        return self.capabilities.describe()

    async def start(self) -> None:
        """Probes the endpoint once (capabilities.py) and says at start what it will use."""
        self._adopt(await probe(self._all[0], self._settings, self._settings.model))

    async def _reprobe(self) -> None:
        """The start probe reached nothing (the endpoint came up after the extractor) and assumed a mode, or
        found every mode refused (an endpoint configured wrong, which may be fixed without restarting us):
        probed again, at most every REPROBE_SECONDS, by one record while the others go on."""
        if time.monotonic() < self._next_probe or self._probing.locked():
            return
        async with self._probing:
            self._next_probe = time.monotonic() + REPROBE_SECONDS
            found = await probe(self._all[0], self._settings, self._settings.model)
            if found.reached and found != self.capabilities:  # the same again: no new start lines every 5 s
                self._adopt(found)

    def _adopt(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities
        self._compiled.clear()  # the schema's keywords and the prompt depend on the mode
        if self.capabilities.tokenize_url and self._http is None:
            key = self._settings.api_key  # a server started with a key guards /tokenize as it guards the API
            headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
            self._http = httpx.AsyncClient(timeout=5.0, trust_env=False, headers=headers)
        extra = {"model": self._settings.model, "endpoint": self.endpoint, "capabilities": self.describe()}
        log.info("extraction provider: openai, model %s at %s (%s)", self._settings.model, self.endpoint,
                 self.describe(), extra=extra)  # fmt: skip
        for note in self.capabilities.notes:
            log.info("LLM probe: %s", note, extra=extra)
        if self.capabilities.problem:
            log.error("LLM configuration error: %s; every extraction will fail with it until the endpoint or "
                      "POSTCALL_LLM__* settings are fixed", self.capabilities.problem, extra=extra)  # fmt: skip

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def budget(self, spec: ExtractionSpec) -> int:
        """The transcript's token budget: the model's configured budget, within the context window
        (less the instructions, the answer and a repair round) when the window is known."""
        model = spec.model or self._settings.model
        budget = self._settings.budget(model)
        if (window := self.capabilities.context_tokens) is not None:
            compiled = self._compile(spec)
            static = (len(prompt.INSTRUCTIONS) + len(compiled.text) + 400) // CHARS_PER_TOKEN
            # the answer asked for (max_output_tokens when set), and the repair round's copy of an answer
            asked = self._settings.max_output_tokens or compiled.max_tokens
            answers = asked + min(asked, compiled.max_tokens)
            budget = min(budget, window - static - answers - REPAIR_HEADROOM_TOKENS)
        return max(budget, 100)

    def fit(self, spec: ExtractionSpec, messages: list[Message]) -> Fitted:
        model = spec.model or self._settings.model
        fitted = fit_budget(messages, self.budget(spec), model)
        if fitted.truncated:
            TRUNCATED.labels(model).inc()
        return fitted

    async def extract(
        self,
        spec: ExtractionSpec,
        event: ConversationEnded,
        fitted: Fitted,
        local_end: datetime,
        messages: list[Message] | None = None,
    ) -> Extraction:
        model = spec.model or self._settings.model
        if not self.capabilities.reached or self.capabilities.problem:
            await self._reprobe()
        if self.capabilities.problem:
            LLM_REQUESTS.labels(PROVIDER, model, "configuration_error").inc()
            raise ConfigurationError(f"configuration error: {self.capabilities.problem}")
        compiled = self._compile(spec)
        if messages is not None:
            fitted = await self._counted(spec, model, messages, fitted)
        facts = prompt.conversation_facts(event, local_end)
        parsed, data, usage, fitted = await self._answer(model, compiled, facts, fitted, messages)
        return Extraction(
            status="ok",
            provider=PROVIDER,
            model=model,
            endpoint=self.endpoint,
            config_revision=spec.config_revision,
            truncated=fitted.truncated,
            reason=fitted.reason,
            usage=usage,
            **answer.read_answer(parsed, spec, data),
        )

    async def _counted(self, spec: ExtractionSpec, model: str, messages: list[Message], fitted: Fitted) -> Fitted:
        """A transcript near its budget is counted with the server's tokenizer and cut to the true count."""
        url = self.capabilities.tokenize_url
        budget = self.budget(spec)
        if url is None or self._http is None or len(fitted.text) / CHARS_PER_TOKEN < COUNT_ABOVE * budget:
            return fitted
        tokens = await count_tokens(self._http, url, fitted.text, model)
        if tokens is None or tokens <= budget:
            return fitted
        ratio = len(fitted.text) / tokens  # this transcript's characters per token, as the server counts
        refit = fit_budget(messages, int(budget * ratio / CHARS_PER_TOKEN), model)
        TRUNCATED.labels(model).inc()
        return refit

    async def _answer(
        self, model: str, compiled: Compiled, facts: str, fitted: Fitted, messages: list[Message] | None
    ) -> tuple[BaseModel, Any, Usage, Fitted]:
        """One call; one repair round for an invalid or cut-off answer; one shrink for a context overflow."""
        usage = Usage()
        repair: list[dict[str, str]] = []
        shrunk = False
        max_tokens = self._settings.max_output_tokens or compiled.max_tokens
        while True:
            request = [*prompt.messages(compiled.text, facts, fitted.text, fitted.truncated), *repair]
            try:
                content, finish, usage = await self._call(model, request, compiled, max_tokens, usage, fitted.truncated)
            except _AskedWrongly:
                continue
            except _ContextOverflow as exc:
                usage = exc.usage
                if shrunk or not messages:
                    raise ExtractionFailed(f"context too long: {exc}", usage=usage, truncated=fitted.truncated) from exc
                shrunk = True
                fitted = self._shrink(model, messages, fitted, str(exc), max_tokens)
                continue
            problem, cut = _runaway(content, finish, max_tokens), True
            if problem is None:
                cut = False
                try:
                    parsed, data = _parse(content, compiled.model)
                except ValueError as exc:
                    problem = str(exc)
                    if (loop := _loop(content)) is not None:
                        problem += f" (the answer repeats {loop!r})"
                else:
                    LLM_REQUESTS.labels(PROVIDER, model, "ok").inc()
                    data, looped = _drop_loops(data)
                    if looped:  # a small model loops inside strings until the grammar's maxLength
                        LLM_REQUESTS.labels(PROVIDER, model, "looped").inc()
                        parsed = compiled.model.model_validate(data)
                        note = f"model output looped in {', '.join(looped[:6])}: dropped"
                        fitted = replace(fitted, reason=note if fitted.reason is None else f"{fitted.reason}; {note}")
                    return parsed, data, usage, fitted
            LLM_REQUESTS.labels(PROVIDER, model, "cut_off" if cut else "invalid").inc()
            if repair:
                what = "model output cut off after one repair" if cut else "model output invalid after one repair"
                raise ExtractionFailed(f"{what}: {_short(problem)}", usage=usage, truncated=fitted.truncated)
            repair = prompt.repair_turns(None if cut else content, problem, cut)

    def _shrink(self, model: str, messages: list[Message], fitted: Fitted, error: str, max_tokens: int) -> Fitted:
        """The transcript cut by what the server says is too much (or by half), for the one retry."""
        current = max(len(fitted.text) // CHARS_PER_TOKEN, 1)
        budget = current // 2
        if m := _TOKEN_COUNTS.search(error):
            need, have = int(m.group(1)), int(m.group(2))
            if need > have:  # the prompt's own tokens per transcript token are unknown: stay on the safe side
                budget = min(budget * 2, int(current * have / need) - max_tokens - REPAIR_HEADROOM_TOKENS)
        TRUNCATED.labels(model).inc()
        shrunk = fit_budget(messages, max(budget, 100), model)
        reason = f"context overflow ({_short(error)[:160]}): transcript shrunk to about {max(budget, 100)} tokens"
        return replace(shrunk, truncated=True, reason=reason if shrunk.reason is None else f"{reason}; {shrunk.reason}")

    def _compile(self, spec: ExtractionSpec) -> Compiled:
        """Schema, validator and prompt text once per configuration revision (they are the cached prefix)."""
        key = spec.model_dump_json()
        if (found := self._compiled.get(key)) is None:
            if len(self._compiled) >= 512:
                self._compiled.clear()
            caps = self.capabilities
            schema = answer.json_schema(spec, keywords=caps.schema_keywords)
            text = prompt.describe_spec(spec)
            if caps.mode == "prompt":  # nothing constrains the answer: the schema is part of the static prefix
                text += "\nAnswer with JSON that follows this JSON schema:\n" + json.dumps(
                    schema, separators=(",", ":")
                )
            found = Compiled(schema, answer.answer_model(spec, self._country_code), text, answer.output_tokens(spec))
            self._compiled[key] = found
        return found

    async def _call(
        self,
        model: str,
        messages: list[dict[str, str]],
        compiled: Compiled,
        max_tokens: int,
        usage: Usage,
        truncated: bool,
    ) -> tuple[str, str | None, Usage]:
        wait = self.breaker.check()
        if wait > 0:
            LLM_REQUESTS.labels(PROVIDER, model, "circuit_open").inc()
            state = self.breaker.state.replace("_", "-")
            raise DependencyUnavailable(f"{PROVIDER} circuit is {state} after repeated failures", retry_after=wait)
        ticket = self.breaker.generation  # what this request reports counts only while the circuit has not opened since
        body = self._request(model, messages, compiled.schema, max_tokens)
        started = time.monotonic()
        try:
            # the client's timeout bounds each connect, write and read, not the request: an answer that
            # trickles in (a gateway's keep-alive spaces while its upstream works) held the call until the
            # handler's timeout cancelled it, uncounted by the circuit, and the budget of three calls was gone
            async with asyncio.timeout(self._settings.request_timeout_seconds):
                # the client's documented raw-request path: `chat.completions.create` runs every request
                # through its typed-parameter transform, a millisecond of CPU per call at hundreds in flight
                completion = await next(self._clients).post("/chat/completions", body=body, cast_to=ChatCompletion)
        except openai.APIError as exc:
            raise self._failure(exc, model, usage, truncated, ticket, "max_tokens" in body) from exc
        except json.JSONDecodeError as exc:  # a 200 whose JSON body does not parse
            raise self._not_a_completion(model, f"invalid JSON ({exc})", ticket) from exc
        except TimeoutError as exc:  # this request's own deadline (a cancellation from outside propagates)
            LLM_REQUESTS.labels(PROVIDER, model, "timeout").inc()
            raise self._endpoint_failed("LLM timeout", ticket) from exc
        except BaseException:
            self.breaker.abandon(ticket)
            raise
        finally:
            LLM_DURATION.labels(PROVIDER, model).observe(time.monotonic() - started)
        if (what := _not_completion(completion)) is not None:
            raise self._not_a_completion(model, what, ticket)
        self.breaker.record(True, ticket)
        usage = self._account(model, completion, usage)
        content, finish = _content(completion, model, usage, truncated)
        return content, finish, usage

    def _request(
        self, model: str, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": model, "messages": messages,
                                   **structured_keys(self.capabilities.mode, schema)}  # fmt: skip
        if self._settings.temperature is not None:
            request["temperature"] = self._settings.temperature
        # api.openai.com wants max_completion_tokens (reasoning models refuse max_tokens); the servers
        # people run themselves (llama.cpp, vLLM, Ollama) read max_tokens, and an endpoint that refuses it
        # (OpenAI's reasoning models on Azure or behind a gateway) gets max_completion_tokens (capabilities.py)
        cap = "max_completion_tokens" if self._settings.base_url is None else self.capabilities.answer_cap
        request[cap] = max_tokens
        return request

    def _failure(
        self, exc: openai.APIError, model: str, usage: Usage, truncated: bool, ticket: int, max_tokens_sent: bool
    ) -> Exception:
        status = getattr(exc, "status_code", None)
        body = error_body(exc)
        if status is not None and request_invalid(status, body):
            self.breaker.record(True, ticket)  # it answered: the endpoint is up, this request is the problem
            if max_tokens_sent and refuses_max_tokens(body):
                # (a configured mode: nothing probed) learnt once, then asked so. Every request sent with max_tokens
                # before the first refusal came back (records extracted at once) is sent again, not only the first
                LLM_REQUESTS.labels(PROVIDER, model, "client_error").inc()
                if self.capabilities.answer_cap == "max_tokens":
                    self.capabilities = replace(self.capabilities, answer_cap="max_completion_tokens")
                    log.warning("the LLM endpoint refuses max_tokens: max_completion_tokens is sent from now on")
                return _AskedWrongly()
            # 413: a proxy's body-size limit in front of the server (ingress-nginx's default is 1m), refused
            # before any model saw it: the transcript is too long for this endpoint, as an overflow says
            if status == 413 or _CONTEXT_TOO_LONG.search(body):
                LLM_REQUESTS.labels(PROVIDER, model, "context_too_long").inc()
                return _ContextOverflow(f"HTTP {status}: {said(exc, self._settings, 300)}", usage)
            if not self.capabilities.reached:  # refused in an assumed mode: retried once the probe has run
                self._next_probe = 0.0
                LLM_REQUESTS.labels(PROVIDER, model, "client_error").inc()
                return RetryableError(f"the LLM endpoint refuses the request in the {self.capabilities.mode} mode "
                                      f"assumed at start (HTTP {status}); probing it again")  # fmt: skip
            LLM_REQUESTS.labels(PROVIDER, model, "configuration_error").inc()
            return ConfigurationError(
                "configuration error: the LLM endpoint refuses the request "
                f"(HTTP {status}): {said(exc, self._settings, 300)}",
                usage=usage, truncated=truncated,
            )  # fmt: skip
        if status == 404 and model != self._settings.model and "model" in body.lower():
            self.breaker.record(True, ticket)  # the endpoint is up and serves the default model: one agent's mistake
            LLM_REQUESTS.labels(PROVIDER, model, "configuration_error").inc()
            return ConfigurationError(
                f"configuration error: the LLM endpoint does not serve {model!r}, the model the agent names "
                f"(HTTP 404): {said(exc, self._settings, 300)}", usage=usage, truncated=truncated,
            )  # fmt: skip
        outcome = _outcome(exc, status)
        LLM_REQUESTS.labels(PROVIDER, model, outcome).inc()
        response = getattr(exc, "response", None)
        retry_after = None if response is None else parse_retry_after(status or 0, response.headers, self._cap)
        message = f"LLM {outcome.replace('_', ' ')}" + (f" (HTTP {status})" if status else "")
        return self._endpoint_failed(message, ticket, retry_after)

    def _not_a_completion(self, model: str, what: str, ticket: int) -> RetryableError:
        """A 200 that is no chat completion (a gateway's error object, a proxy's page): the endpoint, not
        the conversation, is at fault, so it counts against the circuit like a 5xx."""
        LLM_REQUESTS.labels(PROVIDER, model, "bad_response").inc()
        what = redact(_short(what), self._settings.secrets(), 200)
        return self._endpoint_failed(f"LLM endpoint answered HTTP 200 with {what}, not a chat completion", ticket)

    def _endpoint_failed(self, message: str, ticket: int, retry_after: float | None = None) -> RetryableError:
        """A failure of the endpoint, counted against the circuit: a pause once it is open."""
        self.breaker.record(False, ticket)
        if self.breaker.state is State.OPEN:
            cooldown = self.breaker.policy.open_seconds
            return DependencyUnavailable(f"{message}; circuit open", retry_after=max(retry_after or 0, cooldown))
        return RetryableError(message, retry_after=retry_after)

    def _account(self, model: str, completion: ChatCompletion, usage: Usage) -> Usage:
        u = completion.usage
        if u is None:
            return usage
        # the client does not validate the answer: a count is what the server sent (null, negative, text),
        # and Usage takes non-negative integers only: one that is not one is not counted
        prompt, completions = _count(u.prompt_tokens), _count(u.completion_tokens)
        details = u.prompt_tokens_details
        cached = _count(details.cached_tokens) if details else 0
        timings = (completion.model_extra or {}).get("timings")
        if not cached and isinstance(timings, dict):
            cached = _count(timings.get("cache_n"))  # llama.cpp: prompt tokens its slot's cache already held
        cost = self._cost(model, prompt, cached, completions)
        for kind, n in (("prompt", prompt), ("completion", completions), ("cached", cached)):
            LLM_TOKENS.labels(PROVIDER, model, kind).inc(n)
        LLM_COST.labels(PROVIDER, model).inc(cost)
        return Usage(
            prompt_tokens=min(usage.prompt_tokens + prompt, MAX_COUNT),
            completion_tokens=min(usage.completion_tokens + completions, MAX_COUNT),
            cached_prompt_tokens=min(usage.cached_prompt_tokens + cached, MAX_COUNT),
            cost_usd=round(usage.cost_usd + cost, 8),
        )

    def _cost(self, model: str, prompt_tokens: int, cached: int, completion_tokens: int) -> float:
        price = self._settings.prices.get(model)
        if price is None:
            return 0.0
        cached_price = price.input if price.cached_input is None else price.cached_input
        fresh = max(prompt_tokens - cached, 0)
        return (fresh * price.input + cached * cached_price + completion_tokens * price.output) / 1_000_000


def _count(value: object) -> int:
    """A token count as the server sent it, when it is an integer the contract's Count takes (0 to
    MAX_COUNT; 30.0 is 30, as the contract reads JSON); else 0."""
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and 0 <= value <= MAX_COUNT else 0


def _outcome(exc: openai.APIError, status: int | None) -> str:
    if status is None:
        return "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
    return "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"


def _not_completion(completion: object) -> str | None:
    """What a 200's body is when it is no chat completion with a message (the client casts without
    validating: a page comes back as text, an error object as a completion without choices), or None."""
    if isinstance(completion, str):
        return "a body that is not JSON"
    if not isinstance(completion, ChatCompletion):
        return f"a JSON {type(completion).__name__}"
    if not completion.choices or completion.choices[0].message is None:
        error = (completion.model_extra or {}).get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        return f"an error ({detail})" if detail else "no choices"
    return None


def _content(completion: ChatCompletion, model: str, usage: Usage, truncated: bool) -> tuple[str, str | None]:
    choice = completion.choices[0]
    refusal = choice.message.refusal
    if refusal or choice.finish_reason == "content_filter":
        LLM_REQUESTS.labels(PROVIDER, model, "refused").inc()
        why = _CONTROL.sub("", str(refusal or "content filter")[:300])  # str(): the client keeps what was sent
        raise ExtractionFailed(f"model refused: {why}", usage=usage, truncated=truncated)
    for call in choice.message.tool_calls or ():
        arguments = getattr(getattr(call, "function", None), "arguments", None)
        if isinstance(arguments, dict):  # the object itself (llama-server of March 2026, TGI), not its text
            arguments = json.dumps(arguments, ensure_ascii=False)  # json: any integer, as the client parsed it
        if isinstance(arguments, str) and arguments.strip():
            return arguments, choice.finish_reason
    return _text(choice.message.content), choice.finish_reason


def _text(content: object) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts (Mistral's
    reasoning models answer a "thinking" part, then a "text" part); anything else is no text, an
    invalid answer for the repair round."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _loop(content: str) -> str | None:
    """The unit an answer ends by repeating (at least eight times, as a small model loops inside a
    string: "ha ha ha ...", "2026-03-17, 2026-03-17, ..."), or None."""
    tail = content[-320:]
    if len(tail) < 64:
        return None
    for period in range(1, 41):
        span = period * 8
        if span <= len(tail) and tail[-span:] == tail[-period:] * 8:
            unit = tail[-period:]
            if unit.strip():
                return unit
    return None


_REPEATED = re.compile(r"(.{6,80}?)\1{2,}", re.S)


def _drop_loops(data: Any, path: str = "") -> tuple[Any, list[str]]:
    """The answer with every string that repeats a phrase three times in a row emptied (a value and its
    evidence become null, a rationale empty), and the paths of those strings."""
    if isinstance(data, dict):
        out, looped = {}, []
        for key, item in data.items():
            out[key], found = _drop_loops(item, f"{path}.{key}" if path else str(key))
            looped += found
        own = (f"{path}.value", f"{path}.evidence")  # this slot's own strings, not a nested slot's
        if path and "value" in out and any(p in own for p in looped):
            out["value"], out["evidence"] = None, None  # a looping quote cannot support its value
        return out, looped
    if isinstance(data, str) and _REPEATED.search(data):
        return ("" if path.endswith("rationale") else None), [path]
    return data, []


def _runaway(content: str, finish: str | None, max_tokens: int) -> str | None:
    """Why an answer cannot be used as it is: cut off at the token cap (often a loop), or longer than an
    extracted record has room for (a server that ignores max_tokens), or None."""
    if len(content) > ANSWER_CHARS:
        return f"the answer is {len(content):,} characters, over the {ANSWER_CHARS:,} an extraction has room for"
    if finish != "length":
        return None
    loop = _loop(content)
    return f"the answer was cut off at the {max_tokens}-token cap" + (f", repeating {loop!r}" if loop else "")


def _parse(content: str, model: type[BaseModel]) -> tuple[BaseModel, Any]:
    """JSON (a Markdown code fence around it is tolerated; raw control characters inside strings, which
    some servers' grammars let through, and lone surrogates are dropped) validated by the spec's model."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    lenient = False
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:
            data, lenient = json.loads(text, strict=False), True
        except (ValueError, RecursionError):  # RecursionError: nested past the stack (orjson stops at 1024)
            raise ValueError(f"not valid JSON: {exc}") from exc
    # the answer is four levels deep; walking a deeper one (_clean, _drop_loops) would run out of stack
    if isinstance(data, dict | list) and nested_too_deep(data):
        raise ValueError(f"not the answer: nested deeper than {MAX_NESTING} levels")
    if lenient:
        data = _clean(data)
    try:
        return model.model_validate(data), data
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:20]]
        raise ValueError("\n".join(lines)) from exc


def _clean(data: Any) -> Any:
    if isinstance(data, str):
        return _CONTROL.sub("", data).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if isinstance(data, dict):
        return {k: _clean(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_clean(v) for v in data]
    return data


def _short(exc: Exception | str) -> str:
    return str(exc).replace("\n", "; ")[:300]


def _circuit_changed(state: State, reopen_at: float | None) -> None:
    log.warning("circuit %s", state, extra={"provider": PROVIDER, "circuit": str(state)})
    LLM_CIRCUIT_OPEN.labels(PROVIDER).set(0 if state is State.CLOSED else 1)
