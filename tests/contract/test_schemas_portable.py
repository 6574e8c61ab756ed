"""The published schemas are portable: every file compiles in ajv's strict mode (Node, the validator most
non-Python subscribers use), each has an $id, and the AsyncAPI document names their schema format.

ajv comes from the npm registry (tests/contract/ajv/package.json, locked); `make test` installs it into
.cache/ajv with `npm ci`. Without node or that install the ajv test is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from schemas import generate

ROOT = Path(__file__).resolve().parents[2]
AJV_DIR = Path(__file__).resolve().parent / "ajv"
AJV_PREFIX = ROOT / ".cache" / "ajv"
SCHEMAS = sorted((ROOT / "schemas" / "json").glob(f"*{generate.SCHEMA_SUFFIX}"))
EXAMPLES = sorted((ROOT / "examples" / "conversations").glob("*.json"))


def _ajv(*args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/ensure-tools.sh installs it)")
    if not (AJV_PREFIX / "node_modules" / "ajv" / "package.json").exists():
        pytest.skip("ajv is not installed in .cache/ajv (`make test` runs npm ci for it)")
    return subprocess.run(  # the node found above: the run's own PATH has only /usr/bin and /bin
        [node, str(AJV_DIR / "compile.mjs"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"AJV_PREFIX": str(AJV_PREFIX), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_every_schema_compiles_in_ajv_strict_mode_and_the_examples_validate() -> None:
    checks = [arg for example in EXAMPLES for arg in ("ConversationEnded", str(example))]
    done = _ajv(*map(str, SCHEMAS), "--valid", *checks)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(SCHEMAS)} schemas compiled, {len(EXAMPLES)} instances checked, 0 problem(s)" in done.stdout


def test_ajv_strict_mode_refuses_an_openapi_keyword(tmp_path: Path) -> None:
    """The check itself can fail: pydantic's `discriminator` (OpenAPI only) is what it used to refuse."""
    bad = orjson.loads(SCHEMAS[0].read_bytes())
    bad["discriminator"] = {"propertyName": "type"}
    path = tmp_path / "bad.schema.json"  # not in .cache/ajv: without ajv installed, the test skips
    path.write_bytes(orjson.dumps(bad))
    done = _ajv(str(path))
    assert done.returncode == 1 and 'unknown keyword: "discriminator"' in done.stdout


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_file_has_its_own_id_and_no_openapi_keywords(path: Path) -> None:
    schema = orjson.loads(path.read_bytes())
    assert schema["$id"] == f"urn:postcall:schema:{path.name}"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert b'"discriminator"' not in path.read_bytes()


def test_the_node_that_runs_ajv_is_the_one_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check looked node up on the caller's PATH, the run on /usr/bin:/bin only: with node installed elsewhere
    (/usr/local/bin, nvm under the home folder), which scripts/ensure-tools.sh accepts, the ajv tests failed
    with FileNotFoundError instead of running."""
    real = shutil.which("node")
    if real is None:
        pytest.skip("node is not installed (scripts/ensure-tools.sh installs it)")
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    ran = tmp_path / "ran"
    (elsewhere / "node").write_text(f'#!/bin/sh\n: > "{ran}"\nexec "{real}" "$@"\n')
    (elsewhere / "node").chmod(0o755)
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ['PATH']}")
    done = _ajv(str(SCHEMAS[0]))
    assert ran.exists(), "another node ran than the one on PATH"
    assert done.returncode == 0, done.stdout + done.stderr
