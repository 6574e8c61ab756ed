"""The dispatcher's settings and the start checks that use them: a value the environment gets wrong stops
the start, named, instead of failing every record it touches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.dispatcher.__main__ import build_registry, start
from services.dispatcher.destinations import DestinationBase
from services.dispatcher.settings import DispatcherSettings
from tests.unit.dispatcher.test_sheets_executor import private_key

FILE = """
destinations:
  - name: mail
    kind: smtp
    host: localhost
    port: 2525
    starttls: false
    from_address: calls@example.com
  - name: crm
    kind: http
    url: https://crm.example.com/hook
"""


@pytest.mark.parametrize("agent", ["postcall\n", "postcall ", " postcall", "post\r\ncall", "postcall/é"])
def test_a_user_agent_http_cannot_send_is_refused_at_start(agent: str, tmp_path: Path) -> None:
    """h11 refuses such a header value (LocalProtocolError): every HTTP request of every action failed,
    PermanentError 'the request could not be sent', and went to the dead letter (a value from a
    ConfigMap file ends in a newline)."""
    with pytest.raises(ValidationError, match="user_agent"):
        DispatcherSettings(destinations_file=tmp_path / "d.yaml", user_agent=agent)


@pytest.mark.parametrize("name", ["mial", "crm"])
def test_a_default_email_destination_that_is_no_smtp_destination_stops_the_start(name: str, tmp_path: Path) -> None:
    """It was read only when an email action named no destination: each such email was dead-lettered
    ('unknown destination' or 'is http, this action needs another kind')."""
    path = tmp_path / "d.yaml"
    path.write_text(FILE)
    settings = DispatcherSettings(destinations_file=path, default_email_destination=name)
    with pytest.raises(SystemExit, match=f"default_email_destination {name!r} is not an smtp destination in {path}"):
        build_registry(settings)
    build_registry(DispatcherSettings(destinations_file=path, default_email_destination="mail"))


def test_an_smtp_destination_gets_a_deadline_of_its_own_bounded_by_the_handler_timeout(tmp_path: Path) -> None:
    """The webhooks' 15 s bounded an email's whole attempt too, the answer to the end of DATA included (RFC
    5321 4.5.3.2: 10 minutes): a relay answering later had taken the mail, and the retry sent it again."""
    path = tmp_path / "d.yaml"
    path.write_text(FILE + "  - {name: slow-mail, kind: smtp, host: localhost, from_address: a@example.com, "
                    "starttls: false, timeout_seconds: 30}\n")  # fmt: skip
    registry = build_registry(DispatcherSettings(destinations_file=path))
    timeouts = {d.name: registry.timeout(d) for d in registry.only(DestinationBase)}
    assert timeouts == {"mail": 104.0, "crm": 15.0, "slow-mail": 30.0}
    longer = DispatcherSettings(destinations_file=path, runtime={"handler_timeout_seconds": 660})
    assert longer.smtp_deadline == 644.0  # RFC 5321's 10 minutes fit once the handler may run that long
    assert DispatcherSettings(destinations_file=path, smtp_timeout_seconds=60).smtp_deadline == 60.0
    with pytest.raises(ValidationError, match=r"smtp_timeout_seconds\n  110 s is over the 104 s a delivery attempt"):
        DispatcherSettings(destinations_file=path, smtp_timeout_seconds=110)


def test_an_smtp_destinations_own_timeout_longer_than_the_handler_allows_stops_the_start(tmp_path: Path) -> None:
    """smtp_timeout_seconds over the bound was refused, an smtp destination's own timeout_seconds was not: 300
    s loaded, and a relay slow to answer the end of DATA outlived the handler's 120 s, which was stopped
    and retried while the relay may have taken the message (sent twice)."""
    path = tmp_path / "d.yaml"
    path.write_text(FILE + "  - {name: slow-mail, kind: smtp, host: localhost, from_address: a@example.com, "
                    "starttls: false, timeout_seconds: 300}\n")  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        build_registry(DispatcherSettings(destinations_file=path))
    said = str(stopped.value)
    assert f"{path}:12: destinations[2].timeout_seconds: 300 s is over the 104 s a delivery attempt may take: " in said
    assert "runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds (3 x 2 s) and 10 s" in said, said
    # the handler given the time, the same file loads
    longer = build_registry(DispatcherSettings(destinations_file=path, runtime={"handler_timeout_seconds": 320}))
    assert [longer.timeout(d) for d in longer.smtp() if d.name == "slow-mail"] == [300.0]


OTHER_KINDS = {
    "http": "url: https://crm.example.com/slow",
    "slack": "bot_token: {secret_env: SLACK_TOKEN}",
    "teams": "url_secret: {secret_env: TEAMS_URL}",
    "google_sheets": "service_account: {secret_env: SHEETS_KEY}",
}


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_a_destinations_own_timeout_longer_than_the_handler_allows_stops_the_start_whatever_its_kind(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an smtp destination's was refused: an http destination's timeout_seconds of 300 s loaded, and a
    receiver slow to answer outlived the handler's 120 s, which was stopped mid-request and retried while the
    receiver may have taken the webhook (sent twice). Every kind's attempt, a token fetch included, runs under
    the one deadline, so the one bound applies to each."""
    path = tmp_path / "d.yaml"
    path.write_text(FILE + f"  - {{name: slow, kind: {kind}, {OTHER_KINDS[kind]}, timeout_seconds: 300}}\n")
    key = {"type": "service_account", "private_key": private_key(), "client_email": "w@p.iam.gserviceaccount.com",
           "token_uri": "https://oauth2.googleapis.com/token"}  # fmt: skip
    monkeypatch.setenv("SHEETS_KEY", json.dumps(key))
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-1")
    monkeypatch.setenv("TEAMS_URL", "https://example.webhook.office.com/hook")
    with pytest.raises(SystemExit) as stopped:
        build_registry(DispatcherSettings(destinations_file=path))
    said = str(stopped.value)
    assert f"{path}:12: destinations[2].timeout_seconds: 300 s is over the 104 s a delivery attempt may take: " in said
    assert "(runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds (3 x 2 s) and 10 s)" in said, said
    longer = build_registry(DispatcherSettings(destinations_file=path, runtime={"handler_timeout_seconds": 320}))
    assert [longer.timeout(d) for d in longer.only(DestinationBase) if d.name == "slow"] == [300.0]


def test_a_default_timeout_longer_than_the_handler_allows_stops_the_start_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """default_timeout_seconds allowed up to 300 s whatever the handler's timeout: every webhook to a receiver
    slow to answer was stopped with its handler at 120 s, mid-request, and sent again by the retry."""
    path = tmp_path / "d.yaml"
    path.write_text(FILE)
    monkeypatch.setenv("POSTCALL_DESTINATIONS_FILE", str(path))
    monkeypatch.setenv("POSTCALL_DEFAULT_TIMEOUT_SECONDS", "200")
    monkeypatch.setenv("POSTCALL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")  # before the fix it went on to start
    assert start("dispatcher") == 2
    said = capsys.readouterr().err
    assert "dispatcher: POSTCALL_DEFAULT_TIMEOUT_SECONDS: 200 s is over the 104 s a delivery attempt may take: " in said
    assert "(runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds (3 x 2 s) and 10 s)" in said, said
    monkeypatch.setenv("POSTCALL_RUNTIME__HANDLER_TIMEOUT_SECONDS", "220")  # the handler given the time
    assert DispatcherSettings().default_timeout_seconds == 200.0


def test_a_max_wait_that_leaves_the_default_timeouts_no_room_stops_the_start_naming_both_settings(
    tmp_path: Path,
) -> None:
    """With a long max_wait_seconds the bound went under the defaults, or negative: every timeout_seconds set
    in a file (an smtp destination's) was refused while the defaults it was refused against went on being used,
    longer than the handler allowed. Now the combination itself is refused, naming what to change."""
    path = tmp_path / "d.yaml"
    with pytest.raises(ValidationError) as no_time:
        DispatcherSettings(destinations_file=path, max_wait_seconds=60)
    [error] = no_time.value.errors()
    assert error["loc"] == ("max_wait_seconds",)
    assert error["msg"] == (
        "leaves no time for a delivery attempt: runtime.handler_timeout_seconds (120 s) less 3 x max_wait_seconds "
        "(3 x 60 s) and 10 s is -70 s; lower max_wait_seconds or raise runtime.handler_timeout_seconds"
    )
    with pytest.raises(ValidationError) as little:
        DispatcherSettings(destinations_file=path, max_wait_seconds=35)
    [error] = little.value.errors()
    assert error["loc"] == ("default_timeout_seconds",)
    assert error["msg"].startswith("15 s is over the 5 s a delivery attempt may take: the handler would be stopped")
    assert "3 x max_wait_seconds (3 x 35 s)" in error["msg"]
    # the handler given the time for the waits, both load; an smtp deadline then fills what is left
    settings = DispatcherSettings(destinations_file=path, max_wait_seconds=60, runtime={"handler_timeout_seconds": 300})
    assert settings.smtp_deadline == 110.0
