"""Loading the configuration folder: versions, revisions, last good files, the library, extraction_spec."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from schemas.agent_library import library, titles
from schemas.agents import ConfigError, TaskAction, TriggerSpec, extraction_spec, load_catalog, trigger_id
from tests.unit.router.support import config, write

DEFAULT = """
    agent: support-line
    flows:
      - id: every-call
        actions: [{type: task, title: "default file"}]
"""
VERSION_3 = """
    agent: support-line
    version: 3
    flows:
      - id: every-call
        actions: [{type: task, title: "version 3 file"}]
"""


def test_a_version_file_overrides_the_default_for_that_version_only(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", DEFAULT)
    write(tmp_path, "support-line-v3.yaml", VERSION_3)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == ()

    def title(version: str | None) -> str:
        found = catalog.lookup("support-line", version)
        assert found is not None
        action = found.flows[0].actions[0]
        assert isinstance(action, TaskAction)
        return action.title

    assert title("3") == "version 3 file"
    assert title("4") == "default file"
    assert title(None) == "default file"
    assert catalog.lookup("sales-line", "3") is None


@pytest.mark.parametrize(("written", "read"), [("3.10", "3.1"), ("03", "3"), ("0x10", "16")])
def test_a_version_yaml_reads_as_another_number_is_refused_with_its_line(
    tmp_path: Path, written: str, read: str
) -> None:
    write(tmp_path, "support-line-v3.yaml", VERSION_3.replace("version: 3", f"version: {written}"))
    catalog = load_catalog(tmp_path)
    assert [(p.line, p.path, p.message) for p in catalog.problems] == [
        (3, "version", f'version {written} is read as the number {read}: quote it (version: "{written}")')
    ]
    assert catalog.lookup("support-line", read) is None


def test_a_version_written_as_the_number_it_is_read_as_loads(tmp_path: Path) -> None:
    write(tmp_path, "v.yaml", VERSION_3.replace("version: 3", "version: 2.5"))
    assert load_catalog(tmp_path).lookup("support-line", "2.5") is not None


def test_a_version_file_alone_serves_only_its_version(tmp_path: Path) -> None:
    write(tmp_path, "v3.yaml", VERSION_3)
    catalog = load_catalog(tmp_path)
    assert catalog.lookup("support-line", "3") is not None
    assert catalog.lookup("support-line", "2") is None


def test_a_version_file_never_valid_holds_its_version_and_does_not_fall_back_to_the_default(tmp_path: Path) -> None:
    write(tmp_path, "support-line.yaml", DEFAULT)
    write(tmp_path, "support-line-v3.yaml", VERSION_3.replace("type: task", "type: tsak"))
    catalog = load_catalog(tmp_path)
    assert catalog.problems
    # version 3's conversations wait for its file (retried), never run by the default file's flows
    assert catalog.lookup("support-line", "3") is None and catalog.is_broken("support-line")
    default = catalog.lookup("support-line", "4")
    assert default is not None and default == catalog.lookup("support-line")


def test_revision_is_the_content_hash_of_the_agents_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", DEFAULT)
    cfg = load_catalog(tmp_path).lookup("support-line")
    assert cfg is not None and cfg.revision == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert cfg.source == str(path)


def test_a_file_that_becomes_invalid_keeps_its_last_good_revision(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", DEFAULT)
    good = load_catalog(tmp_path)
    write(tmp_path, "a.yaml", DEFAULT.replace("type: task", "type: tsak"))
    reloaded = load_catalog(tmp_path, previous=good)
    assert reloaded.lookup("support-line") == good.lookup("support-line")
    assert reloaded.files[str(tmp_path / "a.yaml")].stale
    assert [p.path for p in reloaded.problems] == ["flows[0].actions[0]"]
    assert not reloaded.is_broken("support-line")


def test_an_invalid_file_without_a_good_revision_marks_its_agent_broken(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", DEFAULT.replace("type: task", "type: tsak"))
    catalog = load_catalog(tmp_path)
    assert catalog.lookup("support-line") is None and catalog.is_broken("support-line")
    with pytest.raises(ConfigError):
        catalog.raise_for_problems()


def test_a_deleted_file_removes_its_agent(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", DEFAULT)
    good = load_catalog(tmp_path)
    path.unlink()
    assert load_catalog(tmp_path, previous=good).lookup("support-line") is None


def test_two_files_for_the_same_agent_and_version_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", DEFAULT)
    write(tmp_path, "b.yaml", DEFAULT.replace("default file", "other"))
    catalog = load_catalog(tmp_path)
    [problem] = catalog.problems
    assert str(problem).startswith(f"{tmp_path / 'b.yaml'}:2: agent: agent 'support-line' is already configured in")
    assert catalog.lookup("support-line").flows[0].actions[0].title == "default file"  # type: ignore[union-attr]


def test_hidden_paths_such_as_configmap_data_folders_are_skipped(tmp_path: Path) -> None:
    data = tmp_path / "..2026_03_10_data"
    data.mkdir()
    write(data, "support-line.yaml", DEFAULT)
    (tmp_path / "..data").symlink_to(data.name)
    os.symlink("..data/support-line.yaml", tmp_path / "support-line.yaml")
    catalog = load_catalog(tmp_path)
    assert list(catalog.files) == [str(tmp_path / "support-line.yaml")] and catalog.problems == ()


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_catalog(tmp_path / "nope")


def test_trigger_id_is_stable_across_case_and_whitespace() -> None:
    assert trigger_id("Did the customer ask to be called back?") == trigger_id(
        "  did the customer ask to be\ncalled back? "
    )
    assert trigger_id("Did the customer ask to be called back?") != trigger_id("Did the customer ask for a call?")
    assert trigger_id("x?").startswith("trg_")


SPEC = """
    agent: support-line
    extraction:
      provider: heuristic
      min_confidence: 0.7
      fields:
        - {name: severity, type: enum, values: [low, high]}
    recipient_routes:
      - {id: used, rules: [{when: "x", to: [a@x.example]}], fallback: [b@x.example]}
      - {id: unused, rules: [{when: "x", to: [a@x.example]}], fallback: [b@x.example]}
    flows:
      - id: one
        when: {any: [{ai: "Did the customer complain?"}, {field: dyn_mood, op: "==", value: angry}]}
        actions:
          - {type: email, recipients: used, subject: "{{dyn_topic}}", body: "{{dyn_topic}} {{dyn_details | -}}"}
          - {type: task, title: t, when: {ai: "Was a refund promised?"}}
      - id: off
        enabled: false
        when: {ai: "Disabled flows are not asked?"}
        actions: [{type: task, title: "{{dyn_never}}"}]
"""


def test_extraction_spec_collects_fields_dyn_names_triggers_and_routes(tmp_path: Path) -> None:
    cfg = config(tmp_path, SPEC)
    spec = extraction_spec(cfg)
    assert spec.agent_id == "support-line" and spec.config_revision == cfg.revision
    assert (spec.provider, spec.min_confidence) == ("heuristic", 0.7)
    assert [f.name for f in spec.fields] == ["severity"]
    assert spec.dynamic_variables == ["dyn_details", "dyn_mood", "dyn_topic"]
    assert spec.triggers == [
        TriggerSpec(id=trigger_id("Did the customer complain?"), question="Did the customer complain?"),
        TriggerSpec(id=trigger_id("Was a refund promised?"), question="Was a refund promised?"),
    ]
    assert [r.id for r in spec.recipient_routes] == ["used"]


def test_every_library_template_is_a_valid_flow(tmp_path: Path) -> None:
    flows = "".join(
        f"  - {{id: {name.replace('_', '-')}, use_template: {name}, actions: {{email: {{to: [team@x.example]}}}}}}\n"
        for name in library()
    )
    write(tmp_path, "lib.yaml", "agent: library-check\nflows:\n" + flows)
    catalog = load_catalog(tmp_path)
    assert catalog.problems == ()
    cfg = catalog.lookup("library-check")
    assert cfg is not None and len(cfg.flows) == 10
    assert len(extraction_spec(cfg).triggers) == 10


def test_library_has_the_seeds_ten_starting_points_and_their_patterns() -> None:
    assert list(titles().values()) == [
        "Callback Requested",
        "Appointment Booked",
        "Customer Complaint",
        "Unanswered Question",
        "Technical Issue",
        "Billing Inquiry",
        "Escalation Needed",
        "Order Placed",
        "Demo Request",
        "Positive Feedback",
    ]
    actions = {name: [(a["type"], a.get("priority")) for a in t["flow"]["actions"]] for name, t in library().items()}
    assert actions["callback_requested"] == [("email", None), ("task", "High")]
    assert actions["customer_complaint"] == [("email", None), ("task", "High")]
    assert actions["escalation_needed"] == [("email", None), ("task", "High")]
    assert actions["appointment_booked"] == [("email", None)]  # confirmation email only
    for template in library().values():
        question = template["flow"]["when"]["ai"]
        assert question.startswith("Did the customer ") and question.endswith("?") and len(question) > 60


def test_library_template_without_recipients_says_which_template(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "agent: a\nflows:\n  - id: cb\n    use_template: callback_requested\n")
    [problem] = load_catalog(tmp_path).problems
    assert problem.line == 3 and problem.path == "flows[0].actions[0]"
    assert "an email needs recipients" in problem.message and "template 'callback_requested'" in problem.message


def test_example_agents_are_valid() -> None:
    catalog = load_catalog(Path(__file__).resolve().parents[3] / "examples" / "agents")
    assert catalog.problems == ()
    assert {key[0] for key in catalog.configs} == {"support-line", "sales-line"}


def test_flows_may_test_and_render_the_platforms_own_analysis(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo.yaml",
        """\
        agent: demo
        flows:
          - id: platform-says-hot
            when: {field: platform.interest_level, op: "==", value: high}
            actions:
              - type: task
                title: "Hot lead: {{platform.summary | no summary}} ({{platform.sentiment}})"
        """,
    )
    catalog = load_catalog(tmp_path)
    assert not catalog.problems and catalog.lookup("demo") is not None
