"""The committed OpenAPI document is exactly what the query API serves."""

from __future__ import annotations

import orjson

from services.api import openapi


def test_committed_openapi_document_matches_the_app() -> None:
    committed = openapi.PATH.read_bytes() if openapi.PATH.exists() else b"{}"
    assert orjson.loads(committed) == openapi.document(), "the API changed: run `python -m services.api.openapi`"


def test_every_route_is_documented_with_its_auth_and_errors() -> None:
    doc = openapi.document()
    paths = doc["paths"]
    assert set(paths) == {
        "/api/v1/conversations",
        "/api/v1/conversations/reextract",
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/counts",
        "/api/v1/dead-letters/{letter_id}",
        "/api/v1/dead-letters/replay",
        "/api/v1/stats",
        "/api/v1/audit",
    }
    assert "503" in paths["/api/v1/dead-letters/replay"]["post"]["responses"]
    params = {p["name"] for p in paths["/api/v1/conversations"]["get"]["parameters"]}
    assert {"agent", "agent_version", "end_reason", "since", "until", "extraction_status", "failed"} <= params
    assert {"needs_review", "q", "limit", "cursor", "order"} <= params
