"""The extractor's own metrics: LLM requests, tokens, cost, the circuit breaker and configuration reloads.

Request outcomes (the `outcome` of postcall_llm_requests_total): `ok`; `looped` (an ok answer with a
looping string dropped, counted besides its `ok`); `invalid` (output failed validation); `cut_off` (the
output ran to its token limit); `refused`; `rate_limited`; `server_error`; `timeout`; `connection_error`;
`client_error`; `bad_response` (a 200 that is no chat completion); `context_too_long`; `circuit_open`;
`configuration_error` (the endpoint's capabilities do not fit the settings, so no call is made, or it
refuses the request as asked, or does not serve the agent's model).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LLM_REQUESTS = Counter(
    "postcall_llm_requests_total", "Extraction requests, by outcome.", ["provider", "model", "outcome"]
)
LLM_TOKENS = Counter(
    "postcall_llm_tokens_total",
    "Tokens reported by the model: prompt, completion, cached.",
    ["provider", "model", "kind"],
)
LLM_COST = Counter(
    "postcall_llm_cost_usd_total", "Estimated cost from the configured price table, USD.", ["provider", "model"]
)
LLM_DURATION = Histogram(
    "postcall_llm_request_duration_seconds",
    "Time of one extraction request (one model call, or one heuristic pass).",
    ["provider", "model"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
LLM_CIRCUIT_OPEN = Gauge("postcall_llm_circuit_open", "1 while the provider's circuit is open.", ["provider"])
EXTRACTIONS = Counter(
    "postcall_extractions_total", "Conversations extracted, by provider and status.", ["provider", "status"]
)
TRUNCATED = Counter("postcall_transcripts_truncated_total", "Transcripts cut to the model's token budget.", ["model"])
CONFIG_RELOADS = Counter(
    "postcall_extractor_config_reloads_total",
    "Configuration folder reloads, by result: ok, problems, error.",
    ["result"],
)
CONFIG_PROBLEMS = Gauge("postcall_extractor_config_problems", "Problems in the configuration folder right now.")
CONFIG_AGENTS = Gauge("postcall_extractor_config_agents", "Agent configurations (agent, version) loaded right now.")
CONFIG_RELOAD_FAILED = Gauge(
    "postcall_extractor_config_reload_failed",
    "1 while the folder's latest change could not be loaded (a reload with result error): the last good "
    "configuration is in use.",
)
DUPLICATES = Counter(
    "postcall_extractor_duplicates_skipped_total",
    "Records skipped as copies of one already taken (the same event id, another record).",
)
