"""The destinations file: validation, ${VAR} substitution, secrets from env and files, and problems
reported as `file:line: path: message` without echoing values."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import certifi
import pytest

from services.dispatcher import destinations
from services.dispatcher.destinations import ConfigError, HttpDestination, SmtpDestination
from tests.hostile.corpus import HOSTILE_YAML
from tests.unit.dispatcher.conftest import SECRET, SECRET_2


def test_example_file_loads_with_demo_defaults() -> None:
    root = Path(__file__).resolve().parents[3]
    loaded = destinations.load(root / "examples/dispatcher/destinations.yaml", {"SINK_PORT": "9999"})
    assert set(loaded) == {"crm", "sales-crm", "ops-slack", "support-email", "telephony"}
    crm = loaded["crm"]
    assert isinstance(crm, HttpDestination)
    assert crm.endpoint == "http://127.0.0.1:9999/crm" and crm.allow_private and crm.signer is not None


def test_secrets_come_from_env_and_files_and_rotation_keeps_both(tmp_path: Path) -> None:
    secret_file = tmp_path / "whsec"
    secret_file.write_text(SECRET_2 + "\n")
    loaded = destinations.parse(
        f"""
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/x
    signing_secrets: [{{secret_env: CRM}}, {{secret_file: {secret_file}}}]
""",
        {"CRM": SECRET},
    )
    crm = loaded["crm"]
    assert isinstance(crm, HttpDestination) and crm.signer is not None
    assert len(crm.signer.headers("a", b"{}")["webhook-signature"].split()) == 2


def test_a_secret_file_that_is_not_text_is_a_located_problem_naming_it_not_a_traceback(tmp_path: Path) -> None:
    """A secret file holding bytes that are not UTF-8 (a DER key, a file written in Latin-1) raised
    UnicodeDecodeError out of the loader: a traceback at the dispatcher's start naming neither the file,
    the destination nor the line, and quoting a byte of the secret."""
    secret_file = tmp_path / "whsec.der"
    secret_file.write_bytes(b"\x30\x82\xe9secret")
    text = f"""
destinations:
  - {{name: crm, kind: http, url: 'https://x.example', signing_secrets: [{{secret_file: {secret_file}}}]}}
"""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {}, "dest.yaml")
    assert str(caught.value) == (
        f"dest.yaml:3: destinations[0].signing_secrets: crm: secret file {secret_file} is not UTF-8 text"
    )


def test_missing_secret_fails_at_load_without_showing_any_secret() -> None:
    text = "destinations: [{name: crm, kind: http, url: 'https://x.example', signing_secrets: [{secret_env: NOPE}]}]"
    with pytest.raises(ConfigError, match="NOPE is not set"):
        destinations.parse(text, {})


def test_env_substitution_with_defaults_and_unset_variables() -> None:
    text = "destinations: [{name: a, kind: http, url: 'http://${HOST:-localhost}:${PORT}/x'}]"
    loaded = destinations.parse(text, {"PORT": "81"})
    assert loaded["a"].endpoint == "http://localhost:81/x"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="PORT"):
        destinations.parse(text, {})


def test_smtp_destination_with_password_from_env() -> None:
    text = """
destinations:
  - {name: mail, kind: smtp, host: smtp.example.com, port: "${SMTP_PORT:-587}", username: u,
     password: {secret_env: SMTP_PASSWORD}, from_address: a@example.com}
"""
    mail = destinations.parse(text, {"SMTP_PASSWORD": "pw"})["mail"]
    assert isinstance(mail, SmtpDestination)
    assert (mail.port, mail.password_value, mail.starttls) == (587, "pw", True)


def test_an_smtp_password_is_redacted_in_the_base64_forms_auth_sends_it_in() -> None:
    """AUTH LOGIN sends base64(password), AUTH PLAIN base64(NUL user NUL password); a server quoting
    either back in its error (then in a result or a dead letter) left the password decodable."""
    text = """
destinations:
  - {name: mail, kind: smtp, host: smtp.example.com, username: ops@example.com,
     password: {secret_env: SMTP_PASSWORD}, from_address: a@example.com}
"""
    mail = destinations.parse(text, {"SMTP_PASSWORD": "hunter2-correct-horse"})["mail"]
    login = base64.b64encode(b"hunter2-correct-horse").decode()
    plain = base64.b64encode(b"\0ops@example.com\0hunter2-correct-horse").decode()
    echoed = mail.redact(f"535 5.7.8 bad credentials: {login} / AUTH PLAIN {plain}")
    assert login not in echoed and plain not in echoed and echoed.count("[redacted]") == 2, echoed


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{name: a, kind: http}", "destinations[0]: a destination needs exactly one of url, url_secret"),
        ("{name: a, kind: http, url: 'ftp://x'}", "destinations[0].url: String should match pattern"),
        # unknown keys are errors, not ignored
        ("{name: a, kind: http, url: 'https://x', surprise: 1}", "destinations[0].surprise: unknown field 'surprise'"),
        (
            "{name: a, kind: http, url: 'https://x', timeout_second: 5}",
            "destinations[0].timeout_second: unknown field 'timeout_second' (did you mean 'timeout_seconds'?)",
        ),
        ("{name: a, kind: carrier-pigeon, url: 'https://x'}", "destinations[0]: unknown kind 'carrier-pigeon'"),
        ("{name: a, url: 'https://x'}", "destinations[0]: missing required field 'kind'"),
        # the tag key misspelt: only "missing required field" before, the key written unnamed
        ("{name: a, knd: http, url: 'https://x'}", "destinations[0].knd: unknown field 'knd' (did you mean 'kind'?)"),
        (
            "{name: a, kind: http, url: 'https://x', auth: {tpye: bearer, token: t}}",
            "destinations[0].auth.tpye: unknown field 'tpye' (did you mean 'type'?)",
        ),
        (
            "{name: a, kind: http, url: 'https://x', signing_secrets: [{}]}",
            "destinations[0].signing_secrets[0]: a secret needs exactly one of secret_env, secret_file",
        ),
    ],
)
def test_invalid_destinations_are_rejected_with_the_place_and_the_reason(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        destinations.parse(f"destinations: [{entry}]", {}, "dest.yaml")
    assert str(caught.value).startswith(f"dest.yaml:1: {problem}")


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("timeout_seconds: .inf", "timeout_seconds"),
        ("rate_limit_per_second: .inf", "rate_limit_per_second"),
        ("circuit_breaker: {open_seconds: .inf}", "circuit_breaker.open_seconds"),
        ("circuit_breaker: {window_seconds: .inf}", "circuit_breaker.window_seconds"),
    ],
)
def test_an_infinite_number_is_refused_at_load(field: str, where: str) -> None:
    """YAML's .inf passed gt=0: a timeout_seconds of .inf was no deadline at all (a stalled receiver held
    its slots for good), a rate_limit_per_second of .inf stopped the dispatcher at start with a traceback
    (OverflowError: round() of the default burst), an open_seconds of .inf kept a tripped circuit open
    until a restart."""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(f"destinations: [{{name: a, kind: http, url: 'https://x.example', {field}}}]", {}, "d.yaml")
    assert str(caught.value).startswith(f"d.yaml:1: destinations[0].{where}: Input should be a finite number")


NEITHER = "expected a text, or a secret by reference: {secret_env: NAME} or {secret_file: PATH}"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("headers: {authorization: {secret_env: X, prefx: a}}",
         "headers.authorization.prefx: unknown field 'prefx' (did you mean 'prefix'?)"),
        ("headers: {x-version: 2}", f"headers.x-version: {NEITHER}"),
        ("headers: {x-version: [a]}", f"headers.x-version: {NEITHER}"),
        ("auth: {type: basic, username: {secret_evn: U}, password: {secret_env: P}}",
         "auth.username.secret_evn: unknown field 'secret_evn' (did you mean 'secret_env'?)"),
        ("auth: {type: oauth2_client_credentials, token_url: 'https://t.example/t', client_id: 5, "
         "client_secret: {secret_env: S}}", f"auth.client_id: {NEITHER}"),
    ],
)  # fmt: skip
def test_a_text_or_secret_value_that_is_neither_is_one_problem_without_pydantics_union_tags(
    entry: str, problem: str
) -> None:
    """Such a value failed under both members of `str | SecretRef`, each reported with its tag in the
    path: a typo in a secret reference read 'headers.authorization.str: Input should be a valid string'
    first, then '...function-after[_one_source(), HeaderSecret].prefx: unknown field'; the key meant was
    not suggested then, since keys_at could not follow that member (it names the class inside the validator)."""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(f"destinations: [{{name: a, kind: http, url: 'https://x.example', {entry}}}]", {}, "d.yaml")
    assert str(caught.value) == f"d.yaml:1: destinations[0].{problem}"


BROKEN = """\
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    method: GET
  - name: ops-slack
    kind: slack
    url: "${SLACK_URL}"
    max_concurrency: 0
"""


def test_every_problem_of_a_file_is_reported_as_file_line_path_message(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        destinations.load(path, {"SLACK_URL": "https://hooks.slack.example.com/services/T/B/x"})
    assert str(caught.value).splitlines() == [
        f"{path}:5: destinations[0].method: Input should be 'POST', 'PUT' or 'PATCH'",
        f"{path}:9: destinations[1].max_concurrency: Input should be greater than or equal to 1",
    ]
    assert [(p.line, p.path) for p in caught.value.problems] == [
        (5, "destinations[0].method"),
        (9, "destinations[1].max_concurrency"),
    ]


def test_a_substituted_secret_is_never_echoed_in_an_error() -> None:
    text = "destinations:\n  - name: crm\n    kind: http\n    url: '${CRM_URL}'\n"
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {"CRM_URL": "ftp://crm.example.com/hook?token=sk_live_abc123"}, "dest.yaml")
    assert str(caught.value) == "dest.yaml:4: destinations[0].url: String should match pattern '^https?://'"
    assert "sk_live_abc123" not in repr(caught.value) and caught.value.__cause__ is None


def test_unset_variable_and_missing_secret_are_located() -> None:
    text = """\
destinations:
  - name: crm
    kind: http
    url: http://${HOST}/hook
    signing_secrets: [{secret_env: NOPE}]
"""
    with pytest.raises(ConfigError, match=r"dest\.yaml:4: destinations\[0\]\.url: .*\$\{HOST\}, which is not set"):
        destinations.parse(text, {}, "dest.yaml")
    with pytest.raises(ConfigError, match=r"dest\.yaml:5: destinations\[0\]\.signing_secrets: .*NOPE is not set"):
        destinations.parse(text, {"HOST": "crm.example.com"}, "dest.yaml")


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^dest\.yaml:3: YAML: "):
        destinations.parse("destinations:\n  - name: a\n   kind: http\n", {}, "dest.yaml")


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in HOSTILE_YAML], ids=[c[0] for c in HOSTILE_YAML])
def test_hostile_yaml_is_a_located_configuration_error(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "dest.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as caught:
        destinations.load(path, {})
    assert str(caught.value) == f"{path}:{line}: YAML: {message}"


@pytest.mark.parametrize("value", ["!foo [1]", "!!omap [a: 1]", "!!binary aGVsbG8=", "!!timestamp 2001-12-14"])
@pytest.mark.parametrize("field", ["signing_secrets", "headers", "circuit_breaker", "url"])
def test_a_tagged_value_anywhere_is_a_located_error_never_a_type_error(field: str, value: str) -> None:
    text = f"destinations:\n  - name: crm\n    kind: http\n    {field}: {value}\n"
    if field != "url":
        text += "    url: https://crm.example.com/hook\n"
    with pytest.raises(ConfigError, match=r"^dest\.yaml:4: YAML: the tag !.* is not allowed in configuration$"):
        destinations.parse(text, {}, "dest.yaml")


def test_dispatcher_start_fails_with_the_located_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yaml"
    path.write_text(BROKEN)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "POSTCALL_DESTINATIONS_FILE": str(path),
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",  # never reached: the file is read first
        "SLACK_URL": "https://hooks.slack.example.com/services/T/B/sekrit",
    }
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-m", "services.dispatcher"], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{path}:5: destinations[0].method: Input should be 'POST', 'PUT' or 'PATCH'" in done.stderr
    assert f"{path}:9: destinations[1].max_concurrency" in done.stderr
    assert "Traceback" not in done.stderr and "sekrit" not in done.stderr


def test_duplicate_names_are_rejected() -> None:
    text = "destinations: [{name: a, kind: http, url: 'https://x'}, {name: a, kind: slack, url: 'https://y'}]"
    with pytest.raises(ConfigError, match="twice"):
        destinations.parse(text, {})


def test_short_signing_secret_is_rejected_at_load() -> None:
    text = "destinations: [{name: a, kind: http, url: 'https://x', signing_secrets: [{secret_env: S}]}]"
    with pytest.raises(ConfigError, match=r"24\.\.64 bytes"):
        destinations.parse(text, {"S": "whsec_c2hvcnQ="})


CANARY = "tok-CANARY-4d1f9a"
HEADERS = """\
destinations:
  - name: crm
    kind: http
    url: https://crm.example.com/hook
    headers:
      x-tenant: acme
      authorization: {value}
"""


def test_a_header_secret_is_read_by_reference_with_its_prefix(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(CANARY + "\n")  # as `kubectl create secret --from-file` writes it
    for ref, env in (
        ('{secret_env: CRM_TOKEN, prefix: "Bearer "}', {"CRM_TOKEN": CANARY}),
        (f'{{secret_file: {token}, prefix: "Bearer "}}', {}),
    ):
        [crm] = destinations.parse(HEADERS.format(value=ref), env, "dest.yaml").values()
        assert isinstance(crm, HttpDestination)
        assert crm.header_values == {"x-tenant": "acme", "authorization": f"Bearer {CANARY}"}


@pytest.mark.parametrize("bad", [f"{CANARY}\n", f"{CANARY}\r\nX-Evil: 1", f"{CANARY}\x00", f"{CANARY}\x1b[2J", "tök"])
def test_a_header_value_with_a_line_break_or_control_character_is_refused_without_echoing_it(bad: str) -> None:
    """`authorization: "Bearer ${CRM_TOKEN}"` with a token ending in a newline reached h11, whose error
    quoted the token into results, dead letters and logs for 17 hours of retries."""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(HEADERS.format(value='"Bearer ${CRM_TOKEN}"'), {"CRM_TOKEN": bad}, "dest.yaml")
    assert str(caught.value) == (
        "dest.yaml:7: destinations[0].headers.authorization: the value from the file (after ${VAR} substitution) "
        "contains a line break, control character or non-ASCII character"
    )
    assert CANARY not in str(caught.value) and "tök" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "env", "origin"),
    [
        ('"${TENANT}"', {"TENANT": "acme "}, "the file (after ${VAR} substitution)"),
        ('"${TENANT}"', {"TENANT": "\tacme"}, "the file (after ${VAR} substitution)"),
        ('{secret_env: CRM_TOKEN, prefix: " Bearer "}', {"CRM_TOKEN": CANARY}, "the secret CRM_TOKEN"),
    ],
)
def test_a_header_value_beginning_or_ending_in_whitespace_is_refused_at_load(
    value: str, env: dict[str, str], origin: str
) -> None:
    """h11 refuses to send such a value (LocalProtocolError): it loaded, then every delivery to the
    destination was dead-lettered as 'the request could not be sent'."""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(HEADERS.format(value=value), env, "dest.yaml")
    assert str(caught.value) == (
        f"dest.yaml:7: destinations[0].headers.authorization: the value from {origin} begins or ends with a "
        "space or tab, which HTTP cannot send"
    )
    assert CANARY not in str(caught.value)


def test_a_header_named_twice_in_different_cases_is_refused_at_load() -> None:
    """Both went out (x-tenant: acme, X-Tenant: other): which one a receiver reads is its own choice."""
    text = HEADERS.replace("authorization: {value}", "X-Tenant: other")
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {}, "dest.yaml")
    assert str(caught.value) == (
        "dest.yaml:7: destinations[0].headers.X-Tenant: x-tenant is set twice (header names ignore case)"
    )


def test_a_header_secret_with_a_line_break_inside_is_refused_naming_only_its_source() -> None:
    with pytest.raises(ConfigError) as caught:
        destinations.parse(HEADERS.format(value="{secret_env: CRM_TOKEN}"), {"CRM_TOKEN": f"a\n{CANARY}"}, "d.yaml")
    assert str(caught.value) == (
        "d.yaml:7: destinations[0].headers.authorization: the value from the secret CRM_TOKEN contains a line "
        "break, control character or non-ASCII character"
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("webhook-signature", "webhook-signature is set by the dispatcher itself"),
        ("Content-Length", "Content-Length is set by the dispatcher itself"),
        ('"x y"', "a header name is letters, digits and !#$%&'*+.^_`|~- only"),
        ('"x:y"', "a header name is letters, digits and !#$%&'*+.^_`|~- only"),
    ],
)
def test_header_names_are_tokens_and_not_the_dispatchers_own(name: str, problem: str) -> None:
    text = HEADERS.replace("authorization: {value}", f"{name}: v")
    with pytest.raises(ConfigError, match=r"^dest\.yaml:7: destinations\[0\]\.headers\.") as caught:
        destinations.parse(text, {}, "dest.yaml")
    assert str(caught.value).endswith(problem)


def test_redact_scrubs_header_values_with_and_without_prefix_and_a_secret_url() -> None:
    text = HEADERS.format(value='{secret_env: T, prefix: "Bearer "}') + (
        "  - name: ops\n    kind: slack\n    url_secret: {secret_env: SLACK}\n"
    )
    env = {"T": CANARY, "SLACK": "https://hooks.slack.example/services/T1/B2/xyz"}
    crm, ops = destinations.parse(text, env, "dest.yaml").values()
    echoed = f'{{"authorization": "Bearer {CANARY}", "token": "{CANARY}", "tenant": "acme"}}'
    assert crm.redact(echoed) == '{"authorization": "[redacted]", "token": "[redacted]", "tenant": "[redacted]"}'
    assert ops.redact("POST /services/T1/B2/xyz failed") == "POST [redacted] failed"


SMTP = """\
destinations:
  - name: mail
    kind: smtp
    host: {host}
    from_address: {sender}
{more}"""


@pytest.mark.parametrize(
    ("host", "sender", "more", "env", "problem"),
    [
        # a ${VAR} ending in a newline: a blank line after From: ended every email's header block
        ("smtp.example.com", '"${MAIL_FROM}"', "", {"MAIL_FROM": "a@example.com\n"}, "5: destinations[0].from_address"),
        (
            "smtp.example.com",
            '"${MAIL_FROM}"',
            "",
            {"MAIL_FROM": "a@example.com\r\nBcc: b@example.com"},
            "5: destinations[0].from_address",
        ),
        ("smtp.example.com", "postcall", "", {}, "5: destinations[0].from_address"),
        ("smtp.example.com", '""', "", {}, "5: destinations[0].from_address"),
        ("smtp.example.com", '"a@example.com, b@example.com"', "", {}, "5: destinations[0].from_address"),
        ("smtp.example.com", '"a@"', "", {}, "5: destinations[0].from_address"),  # was an IndexError traceback
        ('""', "a@example.com", "", {}, "4: destinations[0].host"),
        ('"mail example.com"', "a@example.com", "", {}, "4: destinations[0].host"),
        # a password without a user name was read and never sent: no AUTH, the server's 530 on every email
        ("smtp.example.com", "a@example.com", "    password: {secret_env: PW}\n", {"PW": "pw"}, "2: destinations[0]"),
        ("smtp.example.com", "a@example.com", "    ca_file: /nonexistent/ca.pem\n", {}, "6: destinations[0].ca_file"),
    ],
)
def test_a_bad_smtp_destination_is_refused_at_load_with_the_place(
    host: str, sender: str, more: str, env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        destinations.parse(SMTP.format(host=host, sender=sender, more=more), env, "d.yaml")
    assert str(caught.value).startswith(f"d.yaml:{problem}: ")


LOGIN = "    username: postcall\n    password: {secret_env: PW}\n"


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.25", "relay.localhost.example.com", "127.0.0.1.nip.io"])
def test_a_password_that_would_be_sent_in_clear_text_is_refused_at_load(host: str, tmp_path: Path) -> None:
    """Neither starttls nor implicit_tls: aiosmtplib sends AUTH in clear text if the server offers it."""
    text = SMTP.format(host=host, sender="a@example.com", more=LOGIN + "    starttls: false\n")
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {"PW": "pw-1"}, "d.yaml")
    assert str(caught.value).startswith("d.yaml:7: destinations[0].password: the password would be sent in clear text")
    assert "pw-1" not in str(caught.value)
    path = tmp_path / "d.yaml"
    path.write_text(text)
    [problem] = destinations.check(path, {})  # postcall config validate says so too, without the secret
    assert (problem.line, problem.path) == (7, "destinations[0].password")


@pytest.mark.parametrize(
    ("host", "more"),
    [
        ("smtp.example.com", LOGIN),  # starttls is the default
        ("smtp.example.com", LOGIN + "    starttls: false\n    implicit_tls: true\n    port: 465\n"),
        ("127.0.0.1", LOGIN + "    starttls: false\n"),  # a relay on this host or pod
        ("127.0.0.53", LOGIN + "    starttls: false\n"),
        ('"::1"', LOGIN + "    starttls: false\n"),
        ("localhost", LOGIN + "    starttls: false\n"),
        ("smtp.example.com", "    starttls: false\n"),  # no password: nothing secret sent
        ("10.0.0.25", LOGIN + "    starttls: false\n    allow_plaintext_login: true\n"),  # said so: a trusted network
    ],
)
def test_a_login_over_tls_or_to_a_loopback_relay_is_accepted(host: str, more: str) -> None:
    [mail] = destinations.parse(SMTP.format(host=host, sender="a@example.com", more=more), {"PW": "pw-1"}).values()
    assert isinstance(mail, SmtpDestination)


def test_a_good_smtp_destination_keeps_its_sender_and_reads_its_ca_bundle_once(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(Path(certifi.where()).read_text())
    text = SMTP.format(host="smtp.example.com", sender='"Zoë <calls@example.com>"', more=f"    ca_file: {ca}\n")
    [mail] = destinations.parse(text, {}).values()
    assert isinstance(mail, SmtpDestination) and mail.from_address == "Zoë <calls@example.com>"
    assert mail.tls_context.cert_store_stats()["x509_ca"] > 0
    ca.unlink()  # `postcall config validate` runs where the mounted files are not: not judged there
    path = tmp_path / "d.yaml"
    path.write_text(text)
    assert destinations.check(path) == ()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # each passed the ^https?:// pattern, then every delivery failed, most of them as retryable
        ("https://", "the URL has no host"),
        ("https:///hooks/postcall", "the URL has no host"),
        ("https:// crm.example.com/hook", "the URL has a space or control character"),
        ("https://crm.example.com:99999/hook", "the URL's port is not 1-65535"),
        ("http://[::1/hook", "the URL cannot be parsed: Invalid port"),  # httpx's words, never its quote
    ],
)
def test_a_destination_url_httpx_cannot_send_to_is_refused_at_load_without_echoing_it(
    tmp_path: Path, url: str, problem: str
) -> None:
    for field, value in (("url", "'${CRM_URL}'"), ("url_secret", "{secret_env: CRM_URL}")):
        text = f"destinations:\n  - name: crm\n    kind: http\n    {field}: {value}\n"
        with pytest.raises(ConfigError) as caught:
            destinations.parse(text, {"CRM_URL": url}, "d.yaml")
        assert str(caught.value) == f"d.yaml:4: destinations[0].{field}: {problem}"
    path = tmp_path / "d.yaml"  # `postcall config validate` sees a URL that is not a secret
    path.write_text("destinations:\n  - name: crm\n    kind: http\n    url: '${CRM_URL}'\n")
    [found] = destinations.check(path, {"CRM_URL": url})
    assert (found.line, found.path, found.message) == (4, "destinations[0].url", problem)


def test_a_token_url_httpx_cannot_send_to_is_refused_at_load() -> None:
    text = """\
destinations:
  - name: cases
    kind: http
    url: https://api.crm.example.com/v2
    auth:
      type: oauth2_client_credentials
      token_url: "https:///oauth/token"
      client_id: postcall
      client_secret: {secret_env: CLIENT_SECRET}
"""
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {"CLIENT_SECRET": "s3cret"}, "d.yaml")
    assert str(caught.value) == "d.yaml:7: destinations[0].auth.token_url: the URL has no host"


@pytest.mark.parametrize(
    ("kind", "credential", "own"),
    [
        ("http", "auth: {type: bearer, token: {secret_env: T}}", "the `auth: bearer` credential"),
        ("http", "auth: {type: basic, username: u, password: {secret_env: T}}", "the `auth: basic` credential"),
        (
            "http",
            "auth: {type: oauth2_client_credentials, token_url: 'https://login.example/t', client_id: c, "
            "client_secret: {secret_env: T}}",
            "the `auth: oauth2_client_credentials` credential",
        ),
        ("http", "headers: {Authorization: {secret_env: T, prefix: 'Bearer '}}", "the authorization header"),
        ("slack", "bot_token: {secret_env: T}", "the bot token"),
    ],
)
@pytest.mark.parametrize("login", ["us3r:pa55w0rd@", "k3y-0nly@"])
def test_a_url_login_beside_a_configured_credential_is_refused_at_load(
    tmp_path: Path, kind: str, credential: str, own: str, login: str
) -> None:
    """httpx sends a URL's user:password as `Authorization: Basic`, replacing the header we set: the
    receiver got the URL's Basic credentials, never the configured token (seen on an aiohttp server)."""
    problem = f"the URL has a user name or password, which httpx sends as `Authorization: Basic` in place of {own}"
    env = {"T": "the-token", "CRM_URL": f"https://{login}crm.example.com/api"}
    for field, value in (("url", "'${CRM_URL}'"), ("url_secret", "{secret_env: CRM_URL}")):
        text = f"destinations:\n  - name: crm\n    kind: {kind}\n    {field}: {value}\n    {credential}\n"
        with pytest.raises(ConfigError) as caught:
            destinations.parse(text, env, "d.yaml")
        assert str(caught.value) == f"d.yaml:4: destinations[0].{field}: {problem}: set the credential once"
        assert login[:-1].split(":")[-1] not in str(caught.value)
    path = tmp_path / "d.yaml"  # `postcall config validate` judges a URL that is not a secret
    path.write_text(f"destinations:\n  - name: crm\n    kind: {kind}\n    url: '${{CRM_URL}}'\n    {credential}\n")
    [found] = destinations.check(path, env)
    assert (found.line, found.path, found.message) == (4, "destinations[0].url", f"{problem}: set the credential once")


def test_a_url_login_alone_or_a_token_url_login_with_the_client_in_the_body_still_loads() -> None:
    text = """\
destinations:
  - {name: plain, kind: http, url: 'https://user:pass@crm.example.com/hook'}
  - name: cases
    kind: http
    url: https://api.example.com
    auth:
      type: oauth2_client_credentials
      token_url: https://tenant:key@login.example.com/token
      client_id: c
      client_secret: {secret_env: T}
      client_auth: body
"""
    assert set(destinations.parse(text, {"T": "s"})) == {"plain", "cases"}
    with pytest.raises(ConfigError) as caught:  # client_auth basic: the token request's header is replaced too
        destinations.parse(text.replace("      client_auth: body\n", ""), {"T": "s"}, "d.yaml")
    assert str(caught.value).startswith(
        "d.yaml:8: destinations[1].auth.token_url: the URL has a user name or password, which httpx sends as "
        "`Authorization: Basic` in place of the client id and secret"
    )


def test_a_sheets_url_with_a_login_is_refused_by_validate(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        "destinations:\n  - name: s\n    kind: google_sheets\n    url: https://u:p@sheets.example.com\n"
        "    service_account: {secret_env: KEY}\n"
    )
    [found] = destinations.check(path, {})
    assert (found.line, found.path) == (4, "destinations[0].url")
    assert "in place of the service account's token" in found.message


def test_a_destination_url_whose_host_is_not_a_valid_name_is_refused_at_load() -> None:
    """Before: accepted (the dispatcher's own check had no IDNA rule), then every delivery failed at connect
    with a UnicodeError: `label empty or too long`."""
    text = "destinations:\n  - name: crm\n    kind: http\n    url_secret: {secret_env: CRM_URL}\n"
    with pytest.raises(ConfigError) as caught:
        destinations.parse(text, {"CRM_URL": "https://crm..example.com/hooks/s3cret"}, "d.yaml")
    assert str(caught.value) == "d.yaml:4: destinations[0].url_secret: the URL's host is not a valid name"
