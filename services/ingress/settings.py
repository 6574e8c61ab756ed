"""Ingress settings, read once in the wiring (environment: POSTCALL_INGRESS__ENDPOINTS_FILE,
POSTCALL_INGRESS__PORT, POSTCALL_KAFKA__BOOTSTRAP_SERVERS, ...), in the query API's shape: one
nested group for the HTTP server (`ingress`, as the API's `api`), Kafka as every service has it.
Endpoints and their secrets are in the endpoints file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import EXTRACTION_ROOM_BYTES, MAX_EVENT_BYTES, MAX_MESSAGE_BYTES
from services.common.settings import KafkaSettings


class IngressHttpSettings(BaseModel):
    endpoints_file: Path = Field(description="YAML file of webhook endpoints (services/ingress/endpoints.py).")
    host: str = Field(
        "0.0.0.0",
        description="Address to listen on. Every webhook is authenticated by its signature or token; only "
        "/webhooks/ should be exposed beyond the cluster (deploy/k8s/overlays/prod/ingress-route.yaml).",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port of the webhooks, /healthz, /readyz and /metrics.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=MAX_MESSAGE_BYTES,
        description="Larger requests are refused with 413 before they are read (at most the topic's record size).",
    )
    max_event_bytes: int = Field(
        MAX_EVENT_BYTES,
        ge=1024,
        le=MAX_MESSAGE_BYTES - EXTRACTION_ROOM_BYTES,
        description="A mapped event larger than this (encoded) is refused with 413: its extracted record, the event "
        "plus its extraction (512 KiB kept for it), must fit what the extractor and router read (their "
        "max_record_bytes, 4 MiB by default). Raise both together.",
    )
    max_body_bytes_in_flight: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="The request bodies all requests being served may hold together (each is read before its "
        "signature is checked); a request whose body would pass it is answered 503 with Retry-After. At least "
        "max_body_bytes; with the default 4 MiB body limit, 16 bodies of the largest size, and a few hundred "
        "of the vendors' usual sizes (the pod's memory limit is 512 Mi).",
    )
    read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="A request whose line, headers and body have not all arrived this long after its first byte "
        "(or its connection) is answered 408 and its connection closed, so that a client trickling bytes, or "
        "sending none, cannot hold connections for ever. Longer than any vendor waits for an answer (10-20 s). "
        "A client that leaves the answers written to it unread this long is disconnected too.",
    )
    publish_timeout_seconds: float = Field(
        4.0,
        gt=0,
        le=8.0,
        description="The longest a request waits for the brokers' acknowledgement before the answer is 503; "
        "well under Retell's 10 s and Vapi's 20 s webhook timeouts.",
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After of a 503 (Kafka unavailable).")
    root_path: str = Field("", description="Path prefix when served behind a proxy that strips one.")

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> IngressHttpSettings:
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError("max_body_bytes_in_flight must be at least max_body_bytes")
        return self


class IngressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")

    ingress: IngressHttpSettings = Field(description="Where the webhooks are served and how long they may wait.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="How to reach Kafka.")
    log_level: str = Field("INFO", description="Python log level.")
