"""`make test-llm`: the extractor (its own code path: probe, fit, call, repair, normalisation, review)
against a real llama-server over every example conversation, with each example agent's spec.

A 135M-parameter model extracts poorly; what must hold is what the service promises whatever the model:
every conversation gets a record in time (ok, or failed with a reason that names the problem, never a
timeout or an outage), every value has its field's type, and a failure says why. Run by `make test-llm`
(about ten minutes on two shared cores); skipped in `make test`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.agent_checks import value_problem
from schemas.agent_loader import extraction_spec, load_catalog
from services.devkit.kafka import ROOT
from services.devkit.llama import LlamaServer
from services.devkit.publish import load_examples
from services.extractor.llm import ExtractionFailed
from tests.integration.extractor.conftest import real_extractor

pytestmark = pytest.mark.skipif(
    not os.environ.get("POSTCALL_LLM_EXAMPLES"),
    reason="every example against llama-server takes about ten minutes: `make test-llm` runs it",
)


@pytest.mark.timeout(2400)
async def test_every_example_conversation_gets_a_typed_record_from_llama_server(
    llama: LlamaServer, tmp_path: Path
) -> None:
    catalog = load_catalog(ROOT / "examples" / "agents")
    outcomes = []
    async with real_extractor(llama, tmp_path) as ex:
        for event in load_examples():
            config = catalog.lookup(event.agent.id, event.agent.version)
            assert config is not None
            spec = extraction_spec(config)
            try:
                e = await ex.extract(event, spec)
            except ExtractionFailed as exc:  # permanent, with its reason on the record: allowed
                e = ex.failed(spec, "openai", exc)
            types = {f.name: (f.type, tuple(f.values or ())) for f in spec.fields}
            for name, v in e.fields.items():
                assert value_problem(*types[name], v.value) is None, (event.conversation_id, name, v)
            assert e.endpoint == llama.base_url and e.model == llama.model
            if e.status == "failed":
                assert e.reason and "timeout" not in e.reason.lower()
            filled = sum(v.value is not None for v in e.fields.values())
            outcomes.append((event.conversation_id, e.status, filled, e.usage.completion_tokens, e.reason))
    for outcome in outcomes:
        print(*outcome)
    assert sum(status == "ok" for _, status, *_ in outcomes) >= len(outcomes) // 2
