"""How a service's process starts: settings the environment gets wrong are named, anything else is not
disguised as them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ValidationError

from services.common.config import ConfigWatcher, ReloadMetrics
from services.common.settings import ServiceSettings, run_service

_registry = CollectorRegistry()
RELOAD_METRICS = ReloadMetrics(
    Counter("demo_reloads_total", "", ["result"], registry=_registry),
    Gauge("demo_problems", "", registry=_registry),
    Gauge("demo_agents", "", registry=_registry),
    Gauge("demo_failed", "", registry=_registry),
)


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


class ServiceDemo(ServiceSettings):
    pass


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [
        ("POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS", "5,60", "Extra data at character 2"),
        ("POSTCALL_KAFKA", '{"sasl_password": "hunter2-horse"', "Expecting ',' delimiter at character 34"),
    ],
)
def test_a_value_read_as_json_that_is_not_json_is_one_line_naming_its_variable_not_its_value(
    name: str, value: str, where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list or mapping setting is read as JSON: `5,60` for the retry delays was pydantic-settings'
    SettingsError, a traceback ending in 'error parsing value for field "runtime"', naming neither the
    variable nor what it should be."""
    monkeypatch.setenv(name, value)

    async def main() -> None:
        ServiceDemo()

    assert run_service("demo", main, ServiceDemo) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"demo: {name}: not JSON, which this setting is read as (a list such as [5, 60], or an object): {where}"
    ]
    assert "hunter2" not in err


def test_a_configuration_folder_that_is_no_folder_is_one_line_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POSTCALL_CONFIG_DIR naming nothing (or a file) was a traceback from the router's and the extractor's
    start ('schemas.agent_loader.ConfigError: /agents:0: not a directory')."""
    missing = tmp_path / "agents"

    async def main() -> None:
        ConfigWatcher(missing, lambda config: config, RELOAD_METRICS, logging.getLogger("demo"))

    assert run_service("demo", main, DemoSettings) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"demo: cannot start: configuration folder {missing}: not a directory: nothing exists at this path"
    ]


class Nested(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"


class NestedSettings(BaseModel):
    config_dir: str
    kafka: Nested = Nested()


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("POSTCALL_CONFIGDIR", "POSTCALL_CONFIG_DIR"),
        ("POSTCALL_KAFKA_BOOTSTRAP_SERVERS", "POSTCALL_KAFKA__BOOTSTRAP_SERVERS"),
        ("POSTCALL_KAFKA___BOOTSTRAP_SERVERS", "POSTCALL_KAFKA__BOOTSTRAP_SERVERS"),
    ],
)
def test_a_variable_with_its_underscores_wrong_is_named_with_the_setting_it_meant(
    name: str, meant: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings ignore a variable they have no field for (extra="ignore"): a nested setting written
    with one underscore kept its default (the service went to 127.0.0.1:9092) or was 'not set', and
    nothing named the variable that was meant for it."""
    monkeypatch.setenv(name, "broker:9092")

    async def main() -> None:
        return None

    assert run_service("demo", main, NestedSettings) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"demo: {name} is not a setting and is ignored: did you mean {meant}?"
        + (" (a nested setting's parts join with __)" if "__" in meant else "")
    ]


@pytest.mark.parametrize(
    "name", ["POSTCALL_CONFIG_DIR", "postcall_kafka__bootstrap_servers", "POSTCALL_OTHER_SERVICE", "POSTCALL_KAFKA"]
)
def test_a_setting_or_a_variable_no_setting_is_close_to_says_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, "x")

    async def main() -> None:
        return None

    assert run_service("demo", main, NestedSettings) == 0
    assert capsys.readouterr().err == ""


def test_a_cluster_the_route_cannot_run_on_is_one_line_at_start_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A topic missing (an upgrade that added one before `postcall topics create` ran: walk24's recorder after
    postcall.recorder.replay.v1 was added) or an output with too few partitions was a 30-line traceback, exit
    1, though the runbook (PostcallConsumerNotReady) reads start refusals as one line and exit code 2."""
    from services.common.errors import StartRefused

    async def main() -> None:
        raise StartRefused("demo: topics missing on the cluster: t.v1 (create them with `postcall topics create`)")

    assert run_service("demo", main, DemoSettings) == 2
    assert capsys.readouterr().err.splitlines() == [
        "demo: cannot start: topics missing on the cluster: t.v1 (create them with `postcall topics create`)"
    ]
