"""Router settings, read once in the wiring (environment: POSTCALL_CONFIG_DIR, POSTCALL_KAFKA__..., ...)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from schemas.routes import ROUTER, Route
from services.common.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    route: ClassVar[Route | None] = ROUTER

    config_dir: Path = Field(description="Folder of agent configuration YAML files (a ConfigMap or a git checkout).")
    reload_interval_seconds: float = Field(
        5.0, gt=0, description="How often the folder is checked for changes (file mtimes and sizes)."
    )
    fallback_text: str = Field(
        "(not available)", description="What a missing template value renders as, unless the agent sets its own."
    )
