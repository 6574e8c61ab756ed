"""What the query API answers is what its OpenAPI document says: every status a real request gets is
declared for its route, and the body matches the declared schema (errors included), so a client generated
from services/api/openapi.json handles every answer. The contract test checks the file is current; this
one checks it is true."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import orjson
from openapi_spec_validator import validate

from services.api import openapi
from services.store import tokens
from services.store.db import Store
from tests.integration.api.conftest import client_for
from tests.integration.api.test_queries_api import seed

DOC: dict[str, Any] = orjson.loads(openapi.PATH.read_bytes())


def declared(answer: httpx.Response) -> None:
    """Fails unless the document declares this answer's status for its route, with a schema it matches."""
    route = answer.request.extensions["route"]
    method = answer.request.method.lower()
    responses = DOC["paths"][route][method]["responses"]
    where = f"{method.upper()} {route} answered {answer.status_code} {answer.text[:200]}"
    assert str(answer.status_code) in responses, f"{where}: not declared (declared: {sorted(responses)})"
    schema = responses[str(answer.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(answer.json(), {**schema, "components": DOC["components"]})


async def ask(client: httpx.AsyncClient, method: str, route: str, path: str | None = None, **kw: Any) -> None:
    answer = await client.request(method, path or route, extensions={"route": route}, **kw)
    declared(answer)


async def test_every_answer_is_declared_in_the_openapi_document_with_its_body(store: Store) -> None:
    validate(DOC)
    await seed(store)
    async with store.write() as conn:
        viewer = await tokens.create_token(conn, "grafana", "viewer")
        operator = await tokens.create_token(conn, "alice", "operator")
    async with (
        client_for(store, viewer) as v,
        client_for(store, operator) as o,
        client_for(store) as nobody,
        client_for(store, operator, kafka={"bootstrap_servers": "127.0.0.1:1"}) as no_kafka,
    ):
        conversations, letters = "/api/v1/conversations", "/api/v1/dead-letters"
        one, letter = f"{conversations}/{{conversation_id}}", f"{letters}/{{letter_id}}"
        letter_id = (await v.get(letters)).json()["items"][0]["id"]
        replay, reextract = f"{letters}/replay", f"{conversations}/reextract"
        asked: list[tuple[httpx.AsyncClient, str, str, str | None, dict[str, Any]]] = [
            (v, "GET", conversations, None, {"params": {"limit": 2}}),
            (v, "GET", conversations, None, {"params": {"cursor": "xyz"}}),  # 400
            (v, "GET", conversations, None, {"params": {"limit": 0}}),  # 422
            (nobody, "GET", conversations, None, {}),  # 401
            (v, "GET", one, f"{conversations}/c1", {}),
            (v, "GET", one, f"{conversations}/nope", {}),  # 404
            (nobody, "GET", one, f"{conversations}/c1", {}),
            (v, "GET", letters, None, {}),
            (v, "GET", letters, None, {"params": {"ids": 2**63}}),  # 400
            (v, "GET", f"{letters}/counts", None, {}),
            (v, "GET", f"{letters}/counts", None, {"params": {"ids": 2**63}}),
            (v, "GET", letter, f"{letters}/{letter_id}", {}),
            (v, "GET", letter, f"{letters}/99999", {}),
            (v, "GET", "/api/v1/stats", None, {}),
            (
                v,
                "GET",
                "/api/v1/stats",
                None,
                {"params": {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}},
            ),
            (o, "GET", "/api/v1/audit", None, {}),
            (o, "GET", "/api/v1/audit", None, {"params": {"cursor": "x"}}),
            (v, "GET", "/api/v1/audit", None, {}),  # 403
            (o, "POST", replay, None, {"json": {"filter": {"service": ["router"]}, "dry_run": True}}),
            (o, "POST", replay, None, {"json": {"filter": {"ids": [2**63]}, "dry_run": True}}),
            (v, "POST", replay, None, {"json": {"filter": {"service": ["router"]}, "dry_run": True}}),
            (o, "POST", replay, None, {"content": b'{"filter": {}}'}),  # 415: no Content-Type
            (o, "POST", reextract, None, {"json": {"filter": {"ids": ["c1"]}, "dry_run": True}}),
            (o, "POST", reextract, None, {"json": {"filter": {}}}),  # 422
            (no_kafka, "POST", reextract, None, {"json": {"filter": {"ids": ["c1"]}}}),  # 503, the result
            (nobody, "POST", reextract, None, {"json": {"filter": {"ids": ["c1"]}}}),
        ]
        for client, method, route, path, kw in asked:
            await ask(client, method, route, path, **kw)


def test_the_document_says_how_to_authenticate() -> None:
    schemes = DOC["components"].get("securitySchemes", {})
    assert [s["scheme"] for s in schemes.values() if s["type"] == "http"] == ["bearer"], schemes
    for route, methods in DOC["paths"].items():
        for method, operation in methods.items():
            assert operation.get("security"), f"{method.upper()} {route} declares no security requirement"
            assert "401" in operation["responses"], f"{method.upper()} {route} does not declare its 401"
