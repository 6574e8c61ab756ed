"""The dispatcher's settings and the start checks that use them: a value the environment gets wrong stops
the start, named, instead of failing every record it touches."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.dispatcher.__main__ import build_registry
from services.dispatcher.destinations import DestinationBase
from services.dispatcher.settings import DispatcherSettings

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
    with pytest.raises(ValidationError, match="smtp_timeout_seconds is over 104 s: the handler would be stopped"):
        DispatcherSettings(destinations_file=path, smtp_timeout_seconds=110)
    # a handler timeout that leaves less (a long max_wait_seconds) keeps the webhooks' deadline, as before
    assert DispatcherSettings(destinations_file=path, max_wait_seconds=60).smtp_deadline == 15.0


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
    assert f"{path}:12: destinations[2].timeout_seconds: an smtp attempt's bound is at most 104 s: " in said, said
    assert "runtime.handler_timeout_seconds less 3 x max_wait_seconds" in said
    # the handler given the time, the same file loads
    longer = build_registry(DispatcherSettings(destinations_file=path, runtime={"handler_timeout_seconds": 320}))
    assert [longer.timeout(d) for d in longer.smtp() if d.name == "slow-mail"] == [300.0]
