"""The ingress's OpenAPI document: committed, current, valid, and saying what the service does."""

from __future__ import annotations

import json
import subprocess
import sys

from openapi_spec_validator import validate

from services.ingress import openapi


def test_committed_openapi_document_is_what_the_app_generates() -> None:
    committed = openapi.DOCUMENT.read_text() if openapi.DOCUMENT.exists() else ""
    assert committed == openapi.text(), "out of date: run `python -m services.ingress.openapi` (or `make schemas`)"


def test_check_mode_exits_0_when_current() -> None:
    done = subprocess.run([sys.executable, "-m", "services.ingress.openapi", "--check"], cwd=openapi.ROOT, check=False)
    assert done.returncode == 0


def test_document_is_valid_openapi_and_describes_every_answer() -> None:
    doc = json.loads(openapi.DOCUMENT.read_text())
    validate(doc)
    for platform in ("vapi", "retell", "elevenlabs", "native"):
        post = doc["paths"][f"/webhooks/{platform}/{{endpoint}}"]["post"]
        assert set(post["responses"]) >= {"200", "400", "401", "404", "413", "422", "503"}
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    assert {"/healthz", "/readyz"} <= set(doc["paths"])
