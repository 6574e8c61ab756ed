"""Dispatcher settings, read once in the wiring (environment: POSTCALL_DESTINATIONS_FILE,
POSTCALL_KAFKA__BOOTSTRAP_SERVERS, POSTCALL_RUNTIME__MAX_IN_FLIGHT, ...).

Destinations and their secrets are not settings: they are in the destinations file, whose secrets
come from environment variables or mounted files (see services.dispatcher.destinations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.routes import DISPATCHER, Route
from services.common.settings import ServiceSettings

ATTEMPT_RESERVE_SECONDS = 10.0  # of the handler's time, for the ledger's claim and what follows the attempt


@dataclass(frozen=True)
class AttemptBound:
    """The longest delivery attempt the handler's timeout leaves room for: runtime.handler_timeout_seconds less
    the destination gate's three waits (a place in line, a slot, a rate-limit token: max_wait_seconds each) and
    ATTEMPT_RESERVE_SECONDS. An attempt is everything under one deadline (services.dispatcher.delivery.attempt,
    the email executor): a token fetch, every request and a 401's second one, or a whole SMTP session. A
    timeout longer than this is refused at start: the handler would be stopped first, mid-request, and its
    retry would send again what the receiver may have taken."""

    handler_timeout_seconds: float
    max_wait_seconds: float

    @property
    def seconds(self) -> float:
        return self.handler_timeout_seconds - 3 * self.max_wait_seconds - ATTEMPT_RESERVE_SECONDS

    def made_of(self) -> str:
        return (
            f"runtime.handler_timeout_seconds ({self.handler_timeout_seconds:g} s) less 3 x max_wait_seconds "
            f"(3 x {self.max_wait_seconds:g} s) and {ATTEMPT_RESERVE_SECONDS:g} s"
        )

    def why(self) -> str:
        return (
            "the handler would be stopped first, mid-request, and its retry send again what the receiver may "
            f"have taken ({self.made_of()})"
        )

    def refusal(self, timeout: float) -> str | None:
        """Why `timeout` is refused as an attempt's deadline, or None when it fits."""
        if timeout <= self.seconds:
            return None
        return f"{timeout:g} s is over the {self.seconds:g} s a delivery attempt may take: {self.why()}"


class DispatcherSettings(ServiceSettings):
    route: ClassVar[Route | None] = DISPATCHER

    destinations_file: Path = Field(description="YAML file naming every destination and where its secrets are.")
    default_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Whole-attempt bound of the destinations that set none, smtp aside (Standard Webhooks: 15-30 s). "
        "At most the attempt bound: runtime.handler_timeout_seconds less 3 x max_wait_seconds and "
        f"{ATTEMPT_RESERVE_SECONDS:g} s (104 s with the defaults); longer is refused at start, as is a destination's "
        "own timeout_seconds.",
    )
    smtp_timeout_seconds: float | None = Field(
        None,
        gt=0,
        description="Whole-attempt bound of smtp destinations that set none: connect, TLS, AUTH, each RCPT and the "
        "answer to the end of DATA, which RFC 5321 4.5.3.2 gives a server 10 minutes for (a relay that answers "
        "after the deadline has taken the message, and the retry sends it again). None: as long as the handler "
        "timeout allows, the attempt bound: runtime.handler_timeout_seconds less 3 x max_wait_seconds (the gate's "
        f"waits) and {ATTEMPT_RESERVE_SECONDS:g} s, 104 s with the defaults. A longer value is refused at start.",
    )
    retry_after_floor_seconds: float = Field(5.0, ge=0, description="Shortest Retry-After honoured.")
    max_wait_seconds: float = Field(
        2.0,
        ge=0,
        description="Longest a record waits for a destination slot or rate-limit token before it goes to a "
        "retry tier instead; keeps a slow destination from holding the runtime's in-flight slots. Three such "
        "waits, the reserve and the longest attempt's timeout must fit runtime.handler_timeout_seconds (checked "
        "at start).",
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
    def attempt_bound(self) -> AttemptBound:
        """The longest attempt the handler's timeout leaves room for (default_timeout_seconds,
        smtp_timeout_seconds and a destination's own timeout_seconds are refused above it)."""
        return AttemptBound(self.runtime.handler_timeout_seconds, self.max_wait_seconds)

    @property
    def smtp_deadline(self) -> float:
        """The whole-attempt bound of an smtp destination that sets none (smtp_timeout_seconds)."""
        return self.smtp_timeout_seconds or self.attempt_bound.seconds

    @model_validator(mode="after")
    def _attempts_within_the_handler(self) -> DispatcherSettings:
        """Every setting at fault on its own line, named (POSTCALL_DEFAULT_TIMEOUT_SECONDS: ...), not one line
        for the model (run_service prints a settings error's location as the variable)."""
        bound = self.attempt_bound
        found: list[tuple[str, float, str]] = []
        if bound.seconds <= 0:
            found.append((
                "max_wait_seconds", self.max_wait_seconds,
                f"leaves no time for a delivery attempt: {bound.made_of()} is {bound.seconds:g} s; lower "
                "max_wait_seconds or raise runtime.handler_timeout_seconds",
            ))  # fmt: skip
        else:
            for name in ("default_timeout_seconds", "smtp_timeout_seconds"):
                value = getattr(self, name)
                if value is not None and (refused := bound.refusal(value)) is not None:
                    found.append((name, value, refused))
        if found:
            lines = [
                InitErrorDetails(type=PydanticCustomError("attempt_bound", m), loc=(n,), input=v) for n, v, m in found
            ]
            raise ValidationError.from_exception_data(type(self).__name__, lines)
        return self
