"""The settings every service shares, as the environment sets them: what a wrong value says at start."""

from __future__ import annotations

import datetime
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from schemas.routes import ROUTER
from services.common.settings import ServiceSettings, run_service


class DemoSettings(ServiceSettings):
    pass


def start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> int:
    """run_service on DemoSettings read from `env`; its exit code (0: the settings were taken)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    async def main() -> None:
        DemoSettings().kafka.client_options()

    return run_service("demo", main, DemoSettings)


def client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, in two PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postcall")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"POSTCALL_KAFKA__SSL_CAFILE": "{tmp}/missing.pem"},
            "POSTCALL_KAFKA__SSL_CAFILE: cannot read {tmp}/missing.pem: No such file or directory",
        ),
        (
            {"POSTCALL_KAFKA__SSL_CAFILE": "{tmp}/client.key"},
            "POSTCALL_KAFKA__SSL_CAFILE: {tmp}/client.key is no PEM bundle of CA certificates "
            "(NO_CERTIFICATE_OR_CRL_FOUND)",
        ),
        (
            {"POSTCALL_KAFKA__SSL_CERTFILE": "{tmp}/client.pem"},  # its key is in another file, not named
            "POSTCALL_KAFKA__SSL_CERTFILE: {tmp}/client.pem is not a PEM certificate with its private key",
        ),
        (
            {"POSTCALL_KAFKA__SSL_CERTFILE": "{tmp}/missing.pem", "POSTCALL_KAFKA__SSL_KEYFILE": "{tmp}/client.key"},
            "POSTCALL_KAFKA__SSL_CERTFILE: cannot read {tmp}/missing.pem: No such file or directory",
        ),
        (
            {"POSTCALL_KAFKA__SSL_KEYFILE": "{tmp}/client.key"},
            "POSTCALL_KAFKA__SSL_CERTFILE: not set, but ssl_keyfile is: a client key is used with its certificate",
        ),
    ],
    ids=["ca-missing", "ca-not-pem", "cert-without-its-key", "cert-missing", "key-without-cert"],
)
def test_a_tls_file_kafka_cannot_use_is_one_line_naming_its_variable_and_the_file(
    env: dict[str, str],
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A wrong path or a file that is not PEM surfaced at the first Kafka client as a traceback naming
    neither the variable nor the file ("FileNotFoundError: [Errno 2] No such file or directory",
    "ssl.SSLError: [SSL] PEM lib (_ssl.c:3905)"); a key without its certificate was silently unused."""
    client_certificate(tmp_path)
    env = {name: value.format(tmp=tmp_path) for name, value in env.items()}
    assert start(monkeypatch, {"POSTCALL_KAFKA__SECURITY_PROTOCOL": "SSL", **env}) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"demo: {problem.format(tmp=tmp_path)}"), lines


def test_usable_tls_files_are_taken_and_unused_ones_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = client_certificate(tmp_path)
    tls = {
        "POSTCALL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "POSTCALL_KAFKA__SSL_CAFILE": certifi.where(),
        "POSTCALL_KAFKA__SSL_CERTFILE": str(cert),
        "POSTCALL_KAFKA__SSL_KEYFILE": str(key),
    }
    assert start(monkeypatch, tls) == 0
    plain = {"POSTCALL_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT", "POSTCALL_KAFKA__SSL_CAFILE": str(tmp_path / "none")}
    assert start(monkeypatch, plain) == 0


class RouterLike(ServiceSettings):
    route = ROUTER  # three retry tiers


@pytest.mark.parametrize(
    ("delays", "problem"),
    [
        (
            "[1, 2, 3, 4, 5]",
            "5 retry delays configured ([1.0, 2.0, 3.0, 4.0, 5.0]) but its route declares 3 retry tiers",
        ),
        ("[700000]", "retry delays [700000.0] (with 20% jitter) reach the retry topics' retention of 7 days"),
    ],
)
def test_retry_delays_the_route_cannot_carry_are_one_line_at_start(
    delays: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """More delays than the route has tiers, or a delay its tier's topic would not keep, were refused by
    the runtime's construction: a traceback ending in the ValueError, naming no variable."""
    monkeypatch.setenv("POSTCALL_RUNTIME__RETRY_DELAYS_SECONDS", delays)

    async def main() -> None:
        RouterLike()

    assert run_service("router", main, RouterLike) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"router: POSTCALL_RUNTIME__*: {problem}"), lines


def test_a_check_over_several_settings_is_its_own_message_not_a_bare_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check of the whole settings (a model validator: several settings together) has no location, and was
    printed as `POSTCALL_: smtp_timeout_seconds is over 104 s ...`; one on a group (`ingress`) named a
    variable no one can set (`POSTCALL_INGRESS: ...`)."""
    from pydantic import BaseModel, ValidationError, model_validator

    from services.common.settings import settings_problems
    from services.dispatcher.settings import DispatcherSettings
    from services.ingress.settings import IngressSettings

    class Together(BaseModel):
        low: int = 2
        high: int = 1

        @model_validator(mode="after")
        def _ordered(self) -> Together:
            if self.low > self.high:
                raise ValueError("low is over high")
            return self

    with pytest.raises(ValidationError) as whole:
        Together()
    assert settings_problems(whole.value, model=Together) == ["low is over high"]

    # the dispatcher's check of its timeouts against the handler's (228ac6c) locates the setting at fault itself
    def only_problem(model: type[BaseModel], **env: str) -> str:
        """The one line settings_problems prints for `model` read with `env`."""
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as refused:
            model()
        [line] = settings_problems(refused.value, model=model)
        return line

    line = only_problem(DispatcherSettings, POSTCALL_DESTINATIONS_FILE="/dev/null", POSTCALL_SMTP_TIMEOUT_SECONDS="500")
    assert line.startswith("POSTCALL_SMTP_TIMEOUT_SECONDS: 500 s is over the 104 s"), line
    line = only_problem(
        IngressSettings,
        POSTCALL_INGRESS__ENDPOINTS_FILE="/dev/null",
        POSTCALL_INGRESS__MAX_BODY_BYTES="2000000",
        POSTCALL_INGRESS__MAX_BODY_BYTES_IN_FLIGHT="1000000",
    )
    assert line.startswith("POSTCALL_INGRESS__*: max_body_bytes_in_flight must be at least"), line
