"""Query API settings, read once in the wiring (environment: POSTCALL_API__HOST, POSTCALL_DATABASE__URL, ...)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KafkaSettings
from services.console.settings import ConsoleSettings
from services.store.settings import DatabaseSettings


class HttpSettings(BaseModel):
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on. Anything but a loopback address needs at least one API token "
        "(`postcall api token create`); the API refuses to start otherwise.",
    )
    port: int = Field(8400, ge=0, le=65535, description="Port to listen on (0: any free port).")
    read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="A request whose line, headers and body have not all arrived this long after it began (or "
        "after the connection) is answered 408 and its connection closed, so that a client trickling bytes, or "
        "sending none, cannot hold a connection for long; at most 300 (as the ingress's). A client that leaves "
        "the answers written to it unread this long is disconnected too.",
    )
    operation_limit: int = Field(10_000, ge=1, description="Most records one replay or re-extraction may send.")
    operation_rate: float = Field(50.0, gt=0, description="Default records per second of a replay or re-extraction.")
    replay_lease_seconds: float = Field(
        300.0,
        ge=1,
        description="A replay claims its dead letters for this long before sending them, renewed every third of it "
        "while it sends: a second replay of the same letters meanwhile skips them. A replay that dies mid-send "
        "leaves its unsent letters claimed until the lease ends; then they are pending again.",
    )

    @property
    def replay_lease(self) -> timedelta:
        return timedelta(seconds=self.replay_lease_seconds)


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")

    api: HttpSettings = Field(default_factory=HttpSettings, description="Where and how the API listens.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="The conversation store.")
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="Kafka: operator actions (replay, re-extract) and the console's destination state.",
    )
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, description="The web console under /console.")
    config_dir: Path | None = Field(
        None,
        description="The agent configuration folder the router and extractor read (POSTCALL_CONFIG_DIR): the "
        "console's agents page and Try a flow use it unless POSTCALL_CONSOLE__CONFIG_DIR names another.",
    )
    destinations_file: Path | None = Field(
        None,
        description="The dispatcher's destinations file (POSTCALL_DESTINATIONS_FILE), for the console's agents "
        "page unless POSTCALL_CONSOLE__DESTINATIONS_FILE names another. Only names and kinds are read.",
    )
    log_level: str = Field("INFO", description="Python log level.")

    @model_validator(mode="after")
    def _console_reads_the_services_folder(self) -> ApiSettings:
        """One setting for every process of a deployment: the console defaults to the services' own files."""
        updates = {
            "config_dir": self.console.config_dir or self.config_dir,
            "destinations_file": self.console.destinations_file or self.destinations_file,
        }
        self.console = self.console.model_copy(update=updates)
        return self
