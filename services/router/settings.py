"""Router settings, read once in the wiring (environment: POSTCALL_CONFIG_DIR, POSTCALL_KAFKA__..., ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KafkaSettings, RuntimeSettings


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="How to reach Kafka.")
    runtime: RuntimeSettings = Field(
        default_factory=lambda: RuntimeSettings(max_in_flight=256, retry_delays_seconds=[5.0, 60.0, 600.0]),
        description="Consumer runtime. The router only computes (many records in flight are cheap); its three "
        "retry tiers match the topic registry (a configuration being fixed is the usual reason to retry).",
    )
    config_dir: Path = Field(description="Folder of agent configuration YAML files (a ConfigMap or a git checkout).")
    reload_interval_seconds: float = Field(
        5.0, gt=0, description="How often the folder is checked for changes (file mtimes and sizes)."
    )
    fallback_text: str = Field(
        "(not available)", description="What a missing template value renders as, unless the agent sets its own."
    )
    log_level: str = Field("INFO", description="Python log level.")
