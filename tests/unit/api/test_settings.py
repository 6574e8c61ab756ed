"""The query API's settings as the environment gives them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.api.settings import ApiSettings
from services.common.settings import settings_problems


@pytest.mark.parametrize("value", ["259200", "inf"])
def test_a_read_timeout_of_days_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """POSTCALL_API__READ_TIMEOUT_SECONDS had no upper bound: three days was accepted, and a client
    trickling a request's bytes (or sending none) held its connection that long; the ingress's is capped."""
    monkeypatch.setenv("POSTCALL_API__READ_TIMEOUT_SECONDS", value)
    with pytest.raises(ValidationError) as caught:
        ApiSettings()
    [problem] = settings_problems(caught.value)
    assert problem.startswith("POSTCALL_API__READ_TIMEOUT_SECONDS: ") and "300" in problem, problem


def test_a_read_timeout_up_to_five_minutes_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTCALL_API__READ_TIMEOUT_SECONDS", "300")
    assert ApiSettings().api.read_timeout_seconds == 300
