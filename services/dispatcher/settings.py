"""Dispatcher settings, read once in the wiring (environment: POSTCALL_DESTINATIONS_FILE,
POSTCALL_KAFKA__BOOTSTRAP_SERVERS, POSTCALL_RUNTIME__MAX_IN_FLIGHT, ...).

Destinations and their secrets are not settings: they are in the destinations file, whose secrets
come from environment variables or mounted files (see services.dispatcher.destinations).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from schemas.routes import DISPATCHER, Route
from services.common.settings import ServiceSettings

SMTP_RESERVE_SECONDS = 10.0  # of the handler's time, for the ledger's claim and what follows the attempt
SMTP_BOUND_WHY = (
    "the handler would be stopped first, and its retry send again a message the relay may have taken "
    f"(runtime.handler_timeout_seconds less 3 x max_wait_seconds and {SMTP_RESERVE_SECONDS:g} s)"
)


class DispatcherSettings(ServiceSettings):
    route: ClassVar[Route | None] = DISPATCHER

    destinations_file: Path = Field(description="YAML file naming every destination and where its secrets are.")
    default_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Whole-request bound for destinations that set none (Standard Webhooks: 15-30 s).",
    )
    smtp_timeout_seconds: float | None = Field(
        None,
        gt=0,
        description="Whole-attempt bound of smtp destinations that set none: connect, TLS, AUTH, each RCPT and the "
        "answer to the end of DATA, which RFC 5321 4.5.3.2 gives a server 10 minutes for (a relay that answers "
        "after the deadline has taken the message, and the retry sends it again). None: as long as the handler "
        "timeout allows, runtime.handler_timeout_seconds less 3 x max_wait_seconds (the gate's waits) and "
        f"{SMTP_RESERVE_SECONDS:g} s, 104 s with the defaults, and never less than default_timeout_seconds. A longer "
        "value is refused at start.",
    )
    retry_after_floor_seconds: float = Field(5.0, ge=0, description="Shortest Retry-After honoured.")
    max_wait_seconds: float = Field(
        2.0,
        ge=0,
        description="Longest a record waits for a destination slot or rate-limit token before it goes to a "
        "retry tier instead; keeps a slow destination from holding the runtime's in-flight slots.",
    )
    default_email_destination: str | None = Field(
        None, description="smtp destination of email actions that name none; None: the only smtp destination."
    )
    group_id: str = Field("postcall-dispatcher", description="Consumer group; one per dispatcher deployment.")
    ledger_dir: Path | None = Field(
        None,
        description="Where the ledger's index of completed action ids lives (a file rebuilt from Kafka at each "
        "start; about 23 bytes per id, measured at 10 million). A disk-backed volume: memory-backed, it would "
        "count against the pod's memory. None: the system's temporary directory.",
    )
    user_agent: str = Field(
        "postcall-dispatcher/0.1",
        # what h11 sends: printable ASCII, no space at either end (a ConfigMap file's newline would fail every request)
        pattern=r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$",
        description="User-Agent of every HTTP request (printable ASCII).",
    )
    console_base_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where people open the query API (e.g. https://postcall.example.com): Slack and Teams link "
        "buttons point to <it>/console/conversations/<id>. None: messages carry no such button.",
    )

    @property
    def smtp_deadline(self) -> float:
        """The whole-attempt bound of an smtp destination that sets none (smtp_timeout_seconds)."""
        return self.smtp_timeout_seconds or max(self.smtp_bound, self.default_timeout_seconds)

    @property
    def smtp_bound(self) -> float:
        """The longest smtp attempt the handler's timeout leaves room for (smtp_timeout_seconds, and an smtp
        destination's own timeout_seconds, are refused above it)."""
        return self.runtime.handler_timeout_seconds - 3 * self.max_wait_seconds - SMTP_RESERVE_SECONDS

    @model_validator(mode="after")
    def _smtp_within_the_handler(self) -> DispatcherSettings:
        bound = self.smtp_bound
        if self.smtp_timeout_seconds is not None and self.smtp_timeout_seconds > bound:
            raise ValueError(f"smtp_timeout_seconds is over {bound:g} s: {SMTP_BOUND_WHY}")
        return self
