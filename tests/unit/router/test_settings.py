"""Router settings: the config folder is required, and the retry tiers match the topic registry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.routes import ROUTER
from services.router.settings import RouterSettings


def test_config_dir_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTCALL_CONFIG_DIR", raising=False)
    with pytest.raises(ValidationError, match="config_dir"):
        RouterSettings()


def test_defaults_match_the_topic_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTCALL_CONFIG_DIR", "/etc/postcall/agents")
    monkeypatch.setenv("POSTCALL_RELOAD_INTERVAL_SECONDS", "2.5")
    settings = RouterSettings()
    assert len(settings.runtime.retry_delays_seconds) == ROUTER.tiers
    assert str(settings.config_dir) == "/etc/postcall/agents" and settings.reload_interval_seconds == 2.5
    assert settings.fallback_text == "(not available)"
