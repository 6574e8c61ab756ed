"""How a service's process starts: settings the environment gets wrong are named, anything else is not
disguised as them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from services.common.settings import run_service


class DemoSettings(BaseModel):
    config_dir: str
    port: int = 1


class Record(BaseModel):
    size: int


def test_the_settings_problem_is_one_line_per_variable_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        DemoSettings.model_validate({"port": "eighty"})

    assert run_service("demo", main, DemoSettings) == 2
    assert capsys.readouterr().err.splitlines() == [
        "demo: POSTCALL_CONFIG_DIR is not set (a required setting; see the service's settings.py)",
        "demo: POSTCALL_PORT: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_another_models_validation_error_keeps_its_traceback() -> None:
    async def main() -> None:
        Record.model_validate({"size": "big"})

    with pytest.raises(ValidationError, match="Record"):
        run_service("demo", main, DemoSettings)


def test_the_exit_code_is_mains() -> None:
    async def three() -> int:
        return 3

    async def nothing() -> None:
        return None

    assert run_service("demo", three, DemoSettings) == 3
    assert run_service("demo", nothing, DemoSettings) == 0
