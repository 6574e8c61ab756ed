"""The committed JSON Schemas and AsyncAPI document are exactly what the models generate."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas import generate
from schemas.events import ACTION_MODELS, WebhookRequested

SCHEMAS_DIR = Path(generate.__file__).resolve().parent


def test_committed_files_match_the_models() -> None:
    bad = generate.drifted(generate.render())
    assert bad == [], f"generated files drifted, run `python -m schemas.generate`: {[str(p) for p in bad]}"


def test_one_schema_file_per_event_and_action_type() -> None:
    names = set(generate.json_schemas())
    expected = {"ConversationEnded", "ConversationExtracted", "DecisionTrace", "ActionRequested", "ActionCompleted"}
    expected |= {"DestinationState"}
    expected |= {model.__name__ for model in ACTION_MODELS.values()}
    assert names == {f"{name}.v1.schema.json" for name in expected}


def test_generation_is_deterministic_and_ignores_topic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    first = generate.render()
    monkeypatch.setenv("POSTCALL_TOPIC_PARTITIONS", "7")
    monkeypatch.setenv("POSTCALL_TOPIC_REPLICATION", "5")
    assert generate.render() == first


def test_check_passes_on_fresh_output_and_names_an_edited_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate.main(["--dir", str(tmp_path)]) == 0
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 0
    edited = tmp_path / "json" / "ConversationEnded.v1.schema.json"
    edited.write_bytes(edited.read_bytes().replace(b'"conversation_id"', b'"conversationId"'))
    capsys.readouterr()
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1
    assert str(edited) in capsys.readouterr().out


def test_check_flags_missing_and_leftover_files(tmp_path: Path) -> None:
    generate.main(["--dir", str(tmp_path)])
    (tmp_path / "asyncapi.yaml").unlink()
    leftover = tmp_path / "json" / "OldEvent.v1.schema.json"
    leftover.write_text("{}\n")
    assert set(generate.drifted(generate.render(tmp_path), tmp_path)) == {tmp_path / "asyncapi.yaml", leftover}
    generate.main(["--dir", str(tmp_path)])
    assert not leftover.exists()
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 0


def test_files_are_sorted_indented_json_with_trailing_newline() -> None:
    for name in generate.json_schemas():
        raw = (SCHEMAS_DIR / "json" / name).read_bytes()
        assert raw.endswith(b"}\n")
        assert raw == orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _validator(name: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMAS_DIR / "json" / f"{name}.v1.schema.json").read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _webhook() -> dict[str, object]:
    action = WebhookRequested(
        action_id="a-1",
        conversation_id="c-1",
        agent_id="support-line",
        flow_id="crm",
        action_index=0,
        config_revision="r1",
        requested_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        source_event_id="e-1",
        destination="crm",
        body={"status": "closed"},
    )
    return action.model_dump(mode="json")


def test_committed_schema_accepts_what_the_model_emits_and_rejects_what_it_refuses() -> None:
    record = _webhook()
    for name in ("WebhookRequested", "ActionRequested"):
        validator = _validator(name)
        assert list(validator.iter_errors(record)) == []
        assert list(validator.iter_errors({k: v for k, v in record.items() if k != "action_id"})) != []
    assert list(_validator("ActionRequested").iter_errors({**record, "type": "carrier_pigeon"})) != []
