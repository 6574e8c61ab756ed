"""append_row: one row appended to a Google Sheet through a `google_sheets` destination (the Sheets REST
API v4, as a service account whose JWT google-auth signs; services.dispatcher.tokens).

Once, by action_id: the row carries its action_id in an id column (after the values unless the action
names one), and every attempt first reads that column (values.get, majorDimension=COLUMNS) and appends
(values.append, INSERT_ROWS) only when the id is not there. So an attempt that timed out after Google
wrote the row finds it on the retry instead of writing it again. Both requests run in one attempt:
one slot, one deadline, the same token.

Values are sent with valueInputOption=RAW: a caller's "=IMPORTXML(...)" is stored as text, never
evaluated as a formula. The sheet (tab) must exist; the spreadsheet must be shared with the service
account's email.

Not covered: two replicas running the same action at the same moment (possible only while a partition
moves between them) can both find the id missing and both append.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from schemas.agent_config import column_number
from schemas.events import RESULT_ID_CHARS, RowAppendRequested
from services.common.errors import PermanentError
from services.dispatcher.delivery import Answer, Delivery, Exchange, HttpSender, failure, json_body
from services.dispatcher.destinations import GoogleSheetsDestination
from services.dispatcher.registry import Registry

#: how much of the id column one attempt reads (about 200,000 rows of action ids)
ID_COLUMN_BYTES = 8 * 1024 * 1024
APPEND_ANSWER_BYTES = 16 * 1024
JSON = {"accept": "application/json"}


class SheetsExecutor:
    def __init__(self, registry: Registry, http: HttpSender) -> None:
        self._registry = registry
        self._http = http

    async def __call__(self, action: RowAppendRequested) -> Delivery:
        dest = self._registry.get(action.destination, GoogleSheetsDestination)
        id_column = action.id_column or letters(len(action.values) + 1)
        width = column_number(id_column)
        if width <= len(action.values):
            raise failure(PermanentError(f"id_column {id_column} is inside the row's values"), dest.name)
        row = [*action.values, *[None] * (width - 1 - len(action.values)), action.action_id]
        values = f"{dest.endpoint.rstrip('/')}/v4/spreadsheets/{quote(action.spreadsheet_id, safe='')}/values/"
        sheet = a1_sheet(action.sheet)
        lookup = values + quote(f"{sheet}!{id_column}:{id_column}", safe="")
        append = values + quote(f"{sheet}!A:{id_column}", safe="") + ":append"
        body = json_body({"majorDimension": "ROWS", "values": [row]})
        found: list[bool] = []

        async def run(exchange: Exchange) -> Answer:
            ids = await exchange.request(
                "GET", lookup, JSON, params={"majorDimension": "COLUMNS"}, read_limit=ID_COLUMN_BYTES
            )
            if ids.status != 200:
                return ids
            if _holds(ids, action.action_id, dest):
                found.append(True)
                return ids
            params = {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}
            headers = {**JSON, "content-type": "application/json"}
            return await exchange.request("POST", append, headers, body, params=params, read_limit=APPEND_ANSWER_BYTES)

        answer, latency_ms = await self._http.attempt(dest, action.type, run)
        if found:
            note = f"already appended: the action id is in column {id_column} (an earlier attempt wrote the row)"
            return Delivery("delivered", dest.name, answer.status, latency_ms, note)
        updated = _updated_range(answer)
        excerpt = f"appended {updated}" if updated else None
        return Delivery("delivered", dest.name, answer.status, latency_ms, None, excerpt, updated)


def letters(number: int) -> str:
    """A column number as A1 letters: 1 = A, 27 = AA."""
    out = ""
    while number:
        number, rest = divmod(number - 1, 26)
        out = chr(65 + rest) + out
    return out


def a1_sheet(name: str) -> str:
    """A sheet name quoted for A1 notation: 'Q1 Calls', with a quote inside doubled."""
    return "'" + name.replace("'", "''") + "'"


def _holds(answer: Answer, action_id: str, dest: GoogleSheetsDestination) -> bool:
    """Whether the id column holds the action id; PermanentError when the column is too long to read
    whole (the check could not be trusted)."""
    if f'"{action_id}"'.encode() in answer.body:  # an id is a plain token: no JSON escaping to undo
        return True
    if len(answer.body) >= ID_COLUMN_BYTES:
        message = (
            f"the sheet's id column is longer than {ID_COLUMN_BYTES // (1024 * 1024)} MiB (about 200,000 rows), "
            "so a repeat could not be ruled out: archive old rows or start a new sheet"
        )
        raise failure(PermanentError(message), dest.name, answer.status)
    return False


def _updated_range(answer: Answer) -> str | None:
    try:
        data: Any = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None
    updates = data.get("updates") if isinstance(data, dict) else None
    updated = updates.get("updatedRange") if isinstance(updates, dict) else None
    return updated[:RESULT_ID_CHARS] if isinstance(updated, str) else None
