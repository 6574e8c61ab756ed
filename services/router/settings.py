"""Router settings, read once in the wiring (environment: POSTCALL_CONFIG_DIR, POSTCALL_KAFKA__..., ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KafkaSettings, RuntimeSettings


class RouterRuntimeSettings(RuntimeSettings):
    """The runtime with the router's defaults. A subclass, not a default instance, so that setting one
    field from the environment (POSTCALL_RUNTIME__X) keeps the other defaults below."""

    max_in_flight: int = Field(256, ge=1, le=10_000, description="Records taken from Kafka and not finished.")
    retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 60.0, 600.0],
        description="Three retry tiers, as the topic registry declares (a configuration being fixed is the "
        "usual reason to retry).",
    )


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="How to reach Kafka.")
    runtime: RouterRuntimeSettings = Field(
        default_factory=RouterRuntimeSettings,
        description="Consumer runtime. The router only computes: many records in flight are cheap.",
    )
    config_dir: Path = Field(description="Folder of agent configuration YAML files (a ConfigMap or a git checkout).")
    reload_interval_seconds: float = Field(
        5.0, gt=0, description="How often the folder is checked for changes (file mtimes and sizes)."
    )
    fallback_text: str = Field(
        "(not available)", description="What a missing template value renders as, unless the agent sets its own."
    )
    log_level: str = Field("INFO", description="Python log level.")
