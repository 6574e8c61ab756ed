"""The destinations file: validation, ${VAR} substitution, secrets from env and files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.dispatcher import destinations
from services.dispatcher.destinations import ConfigError, HttpDestination, SmtpDestination
from tests.unit.dispatcher.conftest import SECRET, SECRET_2


def test_example_file_loads_with_demo_defaults() -> None:
    root = Path(__file__).resolve().parents[3]
    loaded = destinations.load(root / "examples/dispatcher/destinations.yaml", {"SINK_PORT": "9999"})
    assert set(loaded) == {"crm", "sales-crm", "ops-slack", "support-email", "telephony"}
    crm = loaded["crm"]
    assert isinstance(crm, HttpDestination)
    assert crm.endpoint == "http://127.0.0.1:9999/crm" and crm.allow_private and crm.signer is not None


def test_secrets_come_from_env_and_files_and_rotation_keeps_both(tmp_path: Path) -> None:
    secret_file = tmp_path / "whsec"
    secret_file.write_text(SECRET_2 + "\n")
    loaded = destinations.parse(
        f"""
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/x
    signing_secrets: [{{secret_env: CRM}}, {{secret_file: {secret_file}}}]
""",
        {"CRM": SECRET},
    )
    crm = loaded["crm"]
    assert isinstance(crm, HttpDestination) and crm.signer is not None
    assert len(crm.signer.headers("a", b"{}")["webhook-signature"].split()) == 2


def test_missing_secret_fails_at_load_without_showing_any_secret() -> None:
    text = "destinations: [{name: crm, kind: http, url: 'https://x.example', signing_secrets: [{secret_env: NOPE}]}]"
    with pytest.raises(ConfigError, match="NOPE is not set"):
        destinations.parse(text, {})


def test_env_substitution_with_defaults_and_unset_variables() -> None:
    text = "destinations: [{name: a, kind: http, url: 'http://${HOST:-localhost}:${PORT}/x'}]"
    loaded = destinations.parse(text, {"PORT": "81"})
    assert loaded["a"].endpoint == "http://localhost:81/x"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="PORT"):
        destinations.parse(text, {})


def test_smtp_destination_with_password_from_env() -> None:
    text = """
destinations:
  - {name: mail, kind: smtp, host: smtp.example.com, port: "${SMTP_PORT:-587}", username: u,
     password: {secret_env: SMTP_PASSWORD}, from_address: a@example.com}
"""
    mail = destinations.parse(text, {"SMTP_PASSWORD": "pw"})["mail"]
    assert isinstance(mail, SmtpDestination)
    assert (mail.port, mail.password_value, mail.starttls) == (587, "pw", True)


@pytest.mark.parametrize(
    "entry",
    [
        "{name: a, kind: http}",  # no url
        "{name: a, kind: http, url: 'ftp://x'}",
        "{name: a, kind: http, url: 'https://x', surprise: 1}",  # unknown keys are errors, not ignored
        "{name: a, kind: carrier-pigeon, url: 'https://x'}",
        "{name: a, kind: http, url: 'https://x', signing_secrets: [{}]}",
    ],
)
def test_invalid_destinations_are_rejected(entry: str) -> None:
    with pytest.raises(ValidationError):
        destinations.parse(f"destinations: [{entry}]", {})


def test_duplicate_names_are_rejected() -> None:
    text = "destinations: [{name: a, kind: http, url: 'https://x'}, {name: a, kind: slack, url: 'https://y'}]"
    with pytest.raises(ConfigError, match="twice"):
        destinations.parse(text, {})


def test_short_signing_secret_is_rejected_at_load() -> None:
    text = "destinations: [{name: a, kind: http, url: 'https://x', signing_secrets: [{secret_env: S}]}]"
    with pytest.raises(ConfigError, match=r"24\.\.64 bytes"):
        destinations.parse(text, {"S": "whsec_c2hvcnQ="})
