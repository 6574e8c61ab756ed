"""The endpoints file: a bad configuration is refused at start with file, line and what is wrong, and
never echoes a secret."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.ingress.endpoints import parse
from services.ingress.handler import context
from services.ingress.platforms import Context
from services.ingress.signatures import RetellVerifier, TokenVerifier, VapiHmacVerifier

GOOD = """\
endpoints:
  - name: acme
    platform: vapi
    account: {id: acme}
    secrets: [{secret_env: VAPI_SECRET}, {secret_env: VAPI_SECRET_OLD}]
  - name: acme
    platform: retell
    account: {id: acme, name: Acme}
    secrets: [{secret_env: RETELL_KEY}]
  - name: legacy
    platform: vapi
    auth: x-vapi-secret
    account: {id: acme}
    secrets: [{secret_env: VAPI_SECRET}]
"""
ENV = {"VAPI_SECRET": "s3cr3t-value", "VAPI_SECRET_OLD": "old-value", "RETELL_KEY": "key_x"}


def test_each_endpoint_gets_its_platforms_verifier_with_both_secrets() -> None:
    endpoints = parse(GOOD, ENV, "endpoints.yaml")
    vapi, retell, legacy = endpoints[("vapi", "acme")], endpoints[("retell", "acme")], endpoints[("vapi", "legacy")]
    assert isinstance(vapi.verifier, VapiHmacVerifier) and list(vapi.verifier.secrets) == ["s3cr3t-value", "old-value"]
    assert isinstance(retell.verifier, RetellVerifier) and retell.config.publish_on == ["call_analyzed"]
    assert isinstance(legacy.verifier, TokenVerifier) and legacy.verifier.header == "x-vapi-secret"
    assert vapi.path == "/webhooks/vapi/acme"


def test_a_requests_mapping_context_is_the_one_init_builds_from_the_endpoint() -> None:
    with_agents = GOOD.replace(
        "account: {id: acme, name: Acme}",
        "account: {id: acme, name: Acme}\n    default_agent_id: d\n    agents: {ag_1: {id: sales, name: Sales}}",
    )
    for endpoint in parse(with_agents, ENV, "endpoints.yaml").values():
        received = datetime(2026, 3, 10, 12, tzinfo=UTC)
        made = context(endpoint, received)
        config = endpoint.config
        expected = Context(
            account_id=config.account.id,
            account_name=config.account.name,
            received_at=received,
            agents={k: (a.id, a.name) for k, a in config.agents.items()},
            default_agent_id=config.default_agent_id,
            publish_on=tuple(config.publish_on) if endpoint.platform == "retell" else (),  # type: ignore[union-attr]
        )
        assert made == expected and repr(made) == repr(expected)
        assert made.received_at is received and type(made) is Context
        # every field given, so a field added to Context later cannot stay at its default unnoticed
        assert set(endpoint.context_fields) | {"received_at"} == {f.name for f in dataclasses.fields(Context)}
        with pytest.raises(FrozenInstanceError):
            made.account_id = "other"  # type: ignore[misc]
    retell = parse(with_agents, ENV, "endpoints.yaml")[("retell", "acme")]
    assert context(retell, received).agents == {"ag_1": ("sales", "Sales")}
    assert context(retell, received).default_agent_id == "d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("platform: retell", "platform: bland"),
            r"endpoints.yaml:6: endpoints\[1\]: unknown platform 'bland'",
        ),
        (GOOD.replace("RETELL_KEY", "NOT_SET"), r"endpoints.yaml:9: endpoints\[1\]\.secrets: .*NOT_SET is not set"),
        (
            GOOD.replace(
                "    account: {id: acme}\n    secrets: [{secret_env: VAPI_SECRET}, ",
                "    secrets: [{secret_env: VAPI_SECRET}, ",
                1,
            ),
            r"endpoints.yaml:2: endpoints\[0\]\.account: missing required field 'account'",
        ),
        (GOOD.replace("name: legacy", "name: acme"), "endpoints.yaml:10: .*vapi/acme is defined twice"),
        (GOOD + "    hmac: {payload_format: '{path}.{body}'}\n", r"endpoints.yaml:15: .*unsupported placeholder"),
        (GOOD + "    hmac: {payload_format: '{url}.{body}'}\n", r"endpoints.yaml:15: .*uses \{url\}: set url"),
        (GOOD + "    hmac: {payload_format: '{svix-id}.{body}'}\n", r"uses \{svix-id\}: set message_id_header"),
        (GOOD + "    hmac: {payload_format: '{body}{body}'}\n", r"\{body\} exactly once"),
        (GOOD + "    hmac: {include_timestamp: false, payload_format: '{timestamp}{body}'}\n", "include_timestamp is"),
        (GOOD + "    hmac: {url: 'ftp://x', payload_format: '{url}{body}'}\n", "url must be the http"),
        (
            GOOD.replace("VAPI_SECRET_OLD}]\n", "VAPI_SECRET_OLD}]\n    hmac: {secret_is_base64: true}\n"),
            r"endpoints.yaml:5: endpoints\[0\]\.secrets: .*not base64",
        ),
        (GOOD + "    tolerance: 5\n", r"unknown field 'tolerance' \(did you mean 'tolerance_seconds'\?\)"),
        # the tag key misspelt: only "missing required field 'platform'" before, the key written unnamed
        (
            GOOD.replace("platform: retell", "platfrom: retell"),
            r"endpoints.yaml:7: endpoints\[1\]\.platfrom: unknown field 'platfrom' \(did you mean 'platform'\?\)$",
        ),
        # header names are HTTP tokens: each loaded before; one not in latin-1 made every request a 500
        (GOOD + "    hmac: {signature_header: x-sig✓}\n", r"endpoints.yaml:15: .*signature_header: a header name"),
        (GOOD + "    hmac: {timestamp_header: 'x ts'}\n", r"endpoints.yaml:15: .*timestamp_header: a header name is"),
        (GOOD + "    hmac: {message_id_header: 'id:'}\n", r"endpoints.yaml:15: .*message_id_header: a header name is"),
        (GOOD + "    bearer: {header: ''}\n", r"endpoints.yaml:15: .*bearer\.header: a header name is"),
        ("endpoints:\n  - &a {name: x}\n", "endpoints.yaml:2: YAML: anchors"),
        ("- just a list\n", "expected a mapping with `endpoints:`"),
        (
            "endpoints:\n  - {name: n, platform: native, account: {id: a}, secrets: [{secret_env: VAPI_SECRET}]}\n",
            "not a Standard Webhooks secret",
        ),
    ],
)
def test_a_bad_file_is_refused_with_file_line_and_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        parse(text, ENV, "endpoints.yaml")
    assert not any(value in str(caught.value) for value in ENV.values())


VAPI_OPTIONS = """\
endpoints:
  - name: svix
    platform: vapi
    account: {id: acme}
    secrets: [{secret_env: B64}]
    hmac: {algorithm: sha1, payload_format: "{svix-id}.{method}.{url}.{body}", message_id_header: X-Msg-Id,
           url: "https://hooks.example.com/v", secret_is_base64: true, encoding: base64}
  - name: untimed
    platform: vapi
    account: {id: acme}
    secrets: [{secret_env: TEXT}]
    hmac: {include_timestamp: false}
  - name: token
    platform: vapi
    auth: bearer
    bearer: {header: X-Api-Key, bearer_prefix: false}
    account: {id: acme}
    secrets: [{secret_env: TEXT}]
"""


def test_the_files_vapi_credential_options_reach_the_verifier() -> None:
    """Each HmacAuthenticationPlan / Bearer option in the file, checked on a request signed by hand."""
    import base64
    import hashlib
    import hmac

    body, key = b'{"message": {}}', b"\x01\x02key"
    found = parse(VAPI_OPTIONS, {"B64": base64.b64encode(key).decode(), "TEXT": "plain"}, "endpoints.yaml")
    svix, untimed, token = (found[("vapi", n)].verifier for n in ("svix", "untimed", "token"))
    signed = b"m-1.POST.https://hooks.example.com/v." + body
    mac = base64.b64encode(hmac.new(key, signed, hashlib.sha1).digest()).decode()
    svix.verify(body, {"x-signature": mac, "x-msg-id": "m-1"}, 0.0)
    untimed.verify(body, {"x-signature": hmac.new(b"plain", body, hashlib.sha256).hexdigest()}, 0.0)
    token.verify(body, {"x-api-key": "plain"}, 0.0)
    assert isinstance(token, TokenVerifier) and token.scheme == ""


def test_secrets_come_from_mounted_files_and_a_missing_file_is_named_never_its_content(tmp_path: Path) -> None:
    current, previous = tmp_path / "current", tmp_path / "previous"
    current.write_text("file-secret-1\n")  # a mounted Secret often ends with a newline
    previous.write_text("file-secret-0")
    text = f"""\
endpoints:
  - name: acme
    platform: retell
    account: {{id: acme}}
    secrets: [{{secret_file: {current}}}, {{secret_file: {previous}}}]
"""
    retell = parse(text, {}, "endpoints.yaml")[("retell", "acme")]
    assert isinstance(retell.verifier, RetellVerifier)
    assert list(retell.verifier.secrets) == ["file-secret-1", "file-secret-0"]
    previous.unlink()
    with pytest.raises(ConfigError, match=f"cannot read secret file {previous}") as caught:
        parse(text, {}, "endpoints.yaml")
    assert "file-secret-1" not in str(caught.value)


def test_an_empty_secret_is_refused_at_start_as_it_would_let_anyone_sign(tmp_path: Path) -> None:
    """An empty HMAC key is a key everyone has: a request signed with b"" would verify. A secret that is
    empty once stripped (a blank mounted file, a variable set to spaces or to nothing) is a start-up error
    naming its place; a demo default stands in only for a variable that is unset or empty."""
    blank = tmp_path / "blank"
    blank.write_text("\n")
    in_file = GOOD.replace("{secret_env: RETELL_KEY}", f"{{secret_file: {blank}}}")
    refused = rf"endpoints.yaml:9: endpoints\[1\]\.secrets: .*secret file {blank} is empty"
    with pytest.raises(ConfigError, match=refused):
        parse(in_file, ENV, "endpoints.yaml")
    for value in ("   ", "\n", ""):
        with pytest.raises(ConfigError, match=r"endpoints.yaml:9: .*environment variable RETELL_KEY is empty"):
            parse(GOOD, {**ENV, "RETELL_KEY": value}, "endpoints.yaml")
    demo = GOOD.replace("{secret_env: RETELL_KEY}", "{secret_env: RETELL_KEY, demo_default: key_demo}")
    retell = parse(demo, {**ENV, "RETELL_KEY": " "}, "endpoints.yaml")[("retell", "acme")].verifier
    assert isinstance(retell, RetellVerifier) and list(retell.secrets) == ["key_demo"]
    with pytest.raises(ConfigError, match=r"environment variable RETELL_KEY is empty"):
        parse(demo.replace("key_demo", "' '"), {**ENV, "RETELL_KEY": ""}, "endpoints.yaml")
