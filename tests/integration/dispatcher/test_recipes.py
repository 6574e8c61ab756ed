"""The recipes in docs/integrations.md, as a user copies them: each recipe's agent file and
destinations pass `postcall config validate`, `postcall try` plans the request it promises, and the
dispatcher sends that planned record to a local server standing in for the vendor (the recipe's origin
replaced; same path, method, body and credentials)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from schemas.events import HttpRequested
from services.cli.main import app
from tests.integration.dispatcher.conftest import Stack
from tests.support.apis import Vendor, serve
from tests.support.calls import ended

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "integrations.md"
_BLOCK = re.compile(r"<!-- recipe: (\w+) (agent|destinations) -->\n```yaml\n(.*?)```", re.S)


def recipes() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name, part, text in _BLOCK.findall(DOC.read_text()):
        found.setdefault(name, {})[part] = text
    return found


@dataclass(frozen=True)
class Case:
    origin: str  # replaced by the local server's
    variables: dict[str, str]
    env: dict[str, str]
    vendor: Vendor
    method: str
    path: str  # as the vendor receives it
    body: Any
    result_id: str | None


SUMMARY = "Customer: Please call me back tomorrow."  # the heuristic extractor's summary of the call
CASES = {
    "hubspot": Case(
        "https://api.hubapi.com",
        {"hubspot_contact_id": "5101"},
        {"HUBSPOT_TOKEN": "pat-na1-CANARY"},
        Vendor(bearer="pat-na1-CANARY", answers={"PATCH": (200, {"id": "5101", "properties": {}})}),
        "PATCH",
        "/crm/v3/objects/contacts/5101",
        {"properties": {"hs_lead_status": "IN_PROGRESS", "last_call_summary": SUMMARY}},
        "5101",
    ),
    "salesforce": Case(
        "https://acme.my.salesforce.com",
        {"case_id": "5003000000D8cuI"},
        {"SALESFORCE_CLIENT_ID": "3MVG9-CANARY", "SALESFORCE_CLIENT_SECRET": "sf-CANARY-secret"},
        Vendor(client=("3MVG9-CANARY", "sf-CANARY-secret"), answers={"PATCH": (204, None)}),
        "PATCH",
        "/services/data/v62.0/sobjects/Case/5003000000D8cuI",
        {"Status": "Working", "Description": SUMMARY, "Origin": "Phone"},
        None,
    ),
    "zendesk": Case(
        "https://acme.zendesk.com",
        {"ticket_id": "35436"},
        {"ZENDESK_API_TOKEN": "zd-CANARY-token"},
        Vendor(
            basic=("agent@acme.example/token", "zd-CANARY-token"), answers={"PUT": (200, {"ticket": {"id": 35436}})}
        ),
        "PUT",
        "/api/v2/tickets/35436",
        {"ticket": {"status": "open", "comment": {"body": f"Call summary: {SUMMARY}", "public": False}}},
        "35436",
    ),
}


def test_the_doc_has_the_three_recipes_each_with_an_agent_and_a_destination() -> None:
    assert {name: sorted(parts) for name, parts in recipes().items()} == {
        name: ["agent", "destinations"] for name in CASES
    }


@pytest.mark.parametrize("name", list(CASES))
async def test_a_recipe_validates_is_planned_by_try_and_reaches_the_vendor(
    name: str, tmp_path: Path, stack: Stack
) -> None:
    recipe, case = recipes()[name], CASES[name]
    agents = tmp_path / "recipe-agents"
    agents.mkdir()
    (agents / f"{name}.yaml").write_text(recipe["agent"])
    destinations = tmp_path / "recipe-destinations.yaml"
    destinations.write_text(recipe["destinations"])
    runner = CliRunner()

    # the commands run their own event loop: off this test's
    checked = await asyncio.to_thread(
        runner.invoke, app, ["config", "validate", str(agents), "--destinations", str(destinations)]
    )
    assert checked.exit_code == 0, checked.stdout

    agent = re.search(r"^agent: (\S+)", recipe["agent"], re.M)
    assert agent is not None
    call = ended("conv-recipe", agent=agent.group(1), dynamic_variables=case.variables)
    conversation = tmp_path / "call.json"
    conversation.write_bytes(orjson.dumps(call.model_dump(mode="json")))
    trial = ["try", "-c", str(conversation), "-a", str(agents), "--provider", "heuristic", "--json"]
    tried = await asyncio.to_thread(runner.invoke, app, trial)
    assert tried.exit_code == 0, tried.stdout
    [planned] = orjson.loads(tried.stdout)["actions"]
    assert planned["topic"] == "postcall.actions.http.v1"
    action = HttpRequested.model_validate(planned["value"])
    assert (action.method, action.body) == (case.method, case.body)

    async with serve(case.vendor.app()) as base:
        local = (
            recipe["destinations"]
            .replace(case.origin, base)
            .replace("    kind: http\n", "    kind: http\n    allow_private: true\n")
        )
        async with stack(local, case.env) as (executors, _):
            delivery = await executors.run(action)
    assert (delivery.outcome, delivery.result_id) == ("delivered", case.result_id)
    [request] = case.vendor.requests
    assert (request.method, request.raw_path, request.json()) == (case.method, case.path, case.body)
