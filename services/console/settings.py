"""Console settings: a part of the query API's settings (environment: POSTCALL_CONSOLE__SESSION_IDLE_MINUTES,
POSTCALL_CONSOLE__CONFIG_DIR, ...), read once with them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ConsoleSettings(BaseModel):
    enabled: bool = Field(True, description="Serve the web console under /console beside the query API.")
    session_idle_minutes: float = Field(
        30.0, gt=0, le=24 * 60, description="A console session ends after this long without a request."
    )
    session_max_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="A console session ends this long after login, used or not."
    )
    secure_cookies: bool = Field(
        False,
        description="Mark the session cookie Secure (HTTPS only). Set it whenever the console is served over TLS.",
    )
    config_dir: Path | None = Field(
        None,
        description="The agent configuration folder the services use (POSTCALL_CONFIG_DIR of the router): the "
        "agents page and 'Try a flow' read it. None: those pages say it is not configured.",
    )
    destinations_file: Path | None = Field(
        None, description="The dispatcher's destinations file: the agents page lists its destinations."
    )
    destination_state: bool = Field(
        True,
        description="Follow postcall.destination-state.v1 (with the API's Kafka settings) to show on a call's "
        "page which of its destinations are disabled by a 410 or have an open circuit. False: the page says so.",
    )
    refresh_seconds: float = Field(
        5.0, ge=1, description="How often the conversations page asks for calls that arrived since it was loaded."
    )
    page_size: int = Field(50, ge=5, le=500, description="Rows per page.")
    redrive_rate: float = Field(20.0, gt=0, description="Default records per second of a redrive.")
