"""Extractor settings, read once in the wiring (environment: POSTCALL_LLM__BASE_URL, POSTCALL_CONFIG_DIR, ...).

The `openai` provider is used when an API key or a base URL is configured; otherwise every agent gets
the offline `heuristic` provider. The same chat-completions API is spoken by

    OpenAI          (no base URL)                                   POSTCALL_LLM__API_KEY
    Azure OpenAI    https://<resource>.openai.azure.com/openai/v1/  POSTCALL_LLM__API_KEY (resource key)
    vLLM            http://vllm:8000/v1                             (no key)
    Ollama          http://ollama:11434/v1                          (no key)
    llama.cpp       http://llama:8080/v1                            (no key)

At start the endpoint is probed once (capabilities.py): the structured-output mode it accepts
(json_schema, json_object with a schema, a forced tool call, or none), its context window and its
tokenizer. Whatever constrains the answer, it is validated, normalised and repaired once.

Timing: a record may take three model calls (the answer, one repair, and the one resend after a context
overflow, which a server refuses before generating anything), each bounded by request_timeout_seconds
(45 s), plus a transcript fetch (10 s) and a token count (5 s): two slow calls and the fetch fit in the
runtime's 120 s handler timeout; a record that takes longer is retried (RetryableError), never lost.
Settings where they do not fit are refused at start (ExtractorSettings.timing_problem).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from schemas.routes import EXTRACTOR, Route
from services.common.breaker import BreakerPolicy
from services.common.settings import ServiceSettings
from services.common.ssrf import UrlRefused, checked_http_url

_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: what a bearer token is written in
COUNT_SECONDS = 5.0  # a token count, in all: it is an optimisation (the transcript stays as estimated)
CHARS_PER_TOKEN = 4  # token estimate used for budgets: len(text) / 4, the usual figure for English


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    input: float = Field(ge=0, description="Uncached prompt tokens, USD per 1M.")
    output: float = Field(ge=0, description="Completion tokens, USD per 1M.")
    cached_input: float | None = Field(None, ge=0, description="Cached prompt tokens; None: the input price.")


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
        "gpt-4o": ModelPrice(input=2.50, cached_input=1.25, output=10.00),
        "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
        "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    }


class LlmSettings(BaseModel):
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://vllm:8000/v1; None: api.openai.com."
    )
    api_key: SecretStr | None = Field(None, description="API key (from a Secret); local servers need none.")
    model: str = Field("gpt-4o-mini", description="Default model; an agent may name its own.")
    request_timeout_seconds: float = Field(45.0, gt=0, description="Bound on one chat-completions request.")
    temperature: float | None = Field(0.0, ge=0, le=2, description="None: the server default.")
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        description="Cap on the answer's tokens; None: sized from the agent's schema (a small model that loops "
        "inside a string stops there instead of filling its context).",
    )
    structured_output: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = Field(
        "auto",
        description="How the answer's shape is asked for; auto: probed at start (json_schema, else json_object "
        "with a schema, else a forced tool call, else the schema in the prompt).",
    )
    context_tokens: int | None = Field(
        None, ge=256, description="The model's context window; None: probed (llama.cpp, vLLM) or unknown."
    )
    tokenizer: bool = Field(True, description="Count long prompts with the server's /tokenize when it has one.")
    token_budgets: dict[str, int] = Field(
        default_factory=lambda: {"gpt-4o-mini": 100_000, "gpt-4o": 100_000, "gpt-4.1-mini": 200_000},
        description="Model -> transcript token budget (tokens estimated as characters / 4).",
    )
    default_token_budget: int = Field(24_000, ge=100, description="Budget of a model not in token_budgets.")
    requests_per_client: int = Field(
        32,
        ge=1,
        description="Requests in flight per client (connection pool); more are spread over several clients, "
        "since a pool's CPU cost per request grows with its number of connections.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices, description="Model -> price, for postcall_llm_cost_usd_total."
    )

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, value: str | None) -> str | None:
        """Refused at start without quoting it: the OpenAI client's httpx raised InvalidURL at the first
        client, quoting part of the URL (a password with an unencoded / ? or # ends the host there and the
        rest of the password is quoted as the port: `Invalid port: 'hunter2'`)."""
        if value is not None:
            try:
                checked_http_url(value)
            except UrlRefused as exc:
                raise ValueError(f"{exc}; an LLM endpoint is like http://vllm:8000/v1") from None
        return value

    @property
    def configured(self) -> bool:
        return self.api_key is not None or self.base_url is not None

    def secrets(self) -> list[str]:
        """What is sent that must never leave the process in text: the key and its Authorization value."""
        key = self.api_key.get_secret_value() if self.api_key else ""
        return [key, f"Bearer {key}"] if key else []

    def budget(self, model: str) -> int:
        return self.token_budgets.get(model, self.default_token_budget)

    @field_validator("model")
    @classmethod
    def _a_model_name(cls, value: str) -> str:
        """Refused at start: every request names it, and no endpoint serves a blank or padded name."""
        if not value.strip() or value != value.strip():
            raise ValueError("not a model name: it is empty or has spaces or a line break around it")
        return value

    @field_validator("api_key")
    @classmethod
    def _a_header_value(cls, value: SecretStr | None) -> SecretStr | None:
        """Refused at start, without quoting it: a key sent as `Authorization: Bearer <key>` must be printable
        ASCII without spaces. A Secret made from a file keeps its last newline, and a key copied from a page
        may hold a zero-width space: the client refused every request before sending it (a newline: 'Connection
        error.', counted by the circuit, which opened and paused extraction for good; a non-ASCII character:
        UnicodeEncodeError, every record retried through its tiers and dead-lettered)."""
        if value is not None and not _HEADER_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "holds a space, a line break, a control or a non-ASCII character, which no HTTP header carries "
                "(a Secret made from a file keeps the file's last newline: `echo -n`, or `printf %s`)"
            )
        return value


class CircuitSettings(BaseModel):
    failure_threshold: int = Field(5, ge=1, description="Consecutive LLM failures that open the circuit.")
    window_seconds: float = Field(30.0, gt=0, description="The failures must fall within this window.")
    cooldown_seconds: float = Field(15.0, gt=0, description="Open time before one probe request is let through.")

    def policy(self) -> BreakerPolicy:
        """services.common.breaker's policy: failures in a row only (no rate rule)."""
        return BreakerPolicy(
            consecutive_failures=self.failure_threshold,
            failure_threshold_percent=None,
            window_seconds=self.window_seconds,
            open_seconds=self.cooldown_seconds,
        )


class DuplicateSettings(BaseModel):
    """A record whose event id this process took from another record within the window is skipped (a
    vendor retry that reached another ingress replica): the model is asked once (duplicates.py)."""

    window_seconds: float = Field(3600.0, ge=0, description="How long an event id is remembered; 0: off.")
    memory: int = Field(100_000, ge=0, description="Event ids remembered, at most (the oldest go first).")


class ExtractorSettings(ServiceSettings):
    route: ClassVar[Route | None] = EXTRACTOR

    config_dir: Path = Field(description="Folder of agent configuration YAML files (a ConfigMap or a git checkout).")
    reload_interval_seconds: float = Field(
        5.0, gt=0, description="How often the folder is checked for changes (file mtimes and sizes)."
    )
    llm: LlmSettings = Field(default_factory=LlmSettings, description="The OpenAI-compatible endpoint.")
    circuit: CircuitSettings = Field(default_factory=CircuitSettings, description="LLM circuit breaker.")
    transcript_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="A transcript_url body larger than this is a permanent failure."
    )
    transcript_timeout_seconds: float = Field(10.0, gt=0, description="Bound on fetching a transcript_url.")
    transcript_allow_private: bool = Field(
        False,
        description="Let transcript_url reach loopback, private and link-local addresses (local setups and "
        "tests only); cloud metadata endpoints stay refused. Off: such a URL is a permanent failure.",
    )
    default_country_code: str = Field(
        "1", pattern=r"^[1-9][0-9]{0,2}$", description="Calling code for phone numbers said without one."
    )
    duplicates: DuplicateSettings = Field(default_factory=DuplicateSettings, description="Copies skipped.")
    offload_chars: int = Field(
        64_000, ge=0, description="Transcripts longer than this are parsed and scanned in a worker thread."
    )

    def timing_problem(self) -> str | None:
        """Why a record's model calls cannot finish within the handler's timeout, or None. Checked where the
        service starts (`postcall eval` and the benchmarks call the model with no handler around it)."""
        if not self.llm.configured:
            return None
        need = 2 * self.llm.request_timeout_seconds + self.transcript_timeout_seconds + COUNT_SECONDS
        handler = self.runtime.handler_timeout_seconds
        if need <= handler:
            return None
        return (
            f"POSTCALL_LLM__REQUEST_TIMEOUT_SECONDS ({self.llm.request_timeout_seconds:g} s) twice (an answer and "
            f"its repair round), POSTCALL_TRANSCRIPT_TIMEOUT_SECONDS ({self.transcript_timeout_seconds:g} s) and a "
            f"token count ({COUNT_SECONDS:g} s) come to {need:g} s, over POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS "
            f"({handler:g} s): a record that needs its repair round would be stopped in it, retried (the answer "
            "billed again) and dead-lettered. Raise the handler timeout or lower the request timeout"
        )
