"""append_row's parts: A1 columns and sheet names, and the service account key read at load (located
problems that never echo the key)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.agent_config import column_number
from services.dispatcher import destinations
from services.dispatcher.destinations import ConfigError, GoogleSheetsDestination
from services.dispatcher.executors.sheets import a1_sheet, letters

SHEETS = """
destinations:
  - name: call-log
    kind: google_sheets
    service_account: {secret_env: KEY}
"""


@pytest.mark.parametrize(("number", "text"), [(1, "A"), (26, "Z"), (27, "AA"), (52, "AZ"), (703, "AAA")])
def test_column_letters_both_ways(number: int, text: str) -> None:
    assert (letters(number), column_number(text)) == (text, number)


def test_sheet_names_are_quoted_for_a1_notation() -> None:
    assert a1_sheet("Calls") == "'Calls'"
    assert a1_sheet("Q1 'Calls'") == "'Q1 ''Calls'''"


def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def test_a_service_account_key_is_read_at_load() -> None:
    info = {
        "type": "service_account", "private_key": private_key(), "private_key_id": "k1",
        "client_email": "w@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
    }  # fmt: skip
    dest = destinations.parse(SHEETS, {"KEY": json.dumps(info)})["call-log"]
    assert isinstance(dest, GoogleSheetsDestination)
    assert (dest.account.email, dest.account.token_uri, dest.account.key_id) == (
        "w@p.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token", "k1",
    )  # fmt: skip
    assert dest.endpoint == "https://sheets.googleapis.com" and dest.max_concurrency == 4
    assert "PRIVATE KEY" not in dest.redact(f"echo {info['private_key']}")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("not json CANARY", "the secret is not a JSON service account key"),
        ('{"type": "authorized_user", "x": "CANARY"}', 'the secret is not a key of "type": "service_account"'),
        ('{"type": "service_account", "private_key": "CANARY"}', "google-auth cannot read the service account key"),
    ],
)
def test_a_bad_key_is_a_located_problem_that_never_quotes_the_key(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        destinations.parse(SHEETS, {"KEY": key}, "d.yaml")
    assert str(caught.value).startswith(f"d.yaml:5: destinations[0].service_account: {problem}")
    assert "CANARY" not in str(caught.value)
