"""Request authentication, checked against the vendors' own code where it exists: a request the vendor's
helper signs (or accepts) verifies with ours, one we sign verifies with theirs, and ours refuses a
tampered body, a stale or future timestamp, a wrong secret and a garbage header."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError
from retell import Retell
from retell.lib.webhook_auth import symmetric as retell_symmetric
from standardwebhooks import Webhook

from services.ingress.signatures import (
    ElevenLabsVerifier,
    Refused,
    RetellVerifier,
    StandardWebhooksVerifier,
    TokenVerifier,
    VapiHmacVerifier,
    elevenlabs_signature,
    retell_signature,
)

BODY = b'{"event":"call_analyzed","call":{"call_id":"c-1","transcript":"caf\xc3\xa9 \xe2\x80\x94 ok"}}'
KEY = "key_retell_live_5f3a"
PREVIOUS = "key_retell_old_1b2c"
NOW = time.time()


def _refused(verifier: object, body: bytes, headers: dict[str, str], now: float = NOW) -> str:
    with pytest.raises(Refused) as caught:
        verifier.verify(body, headers, now)  # type: ignore[attr-defined]
    return str(caught.value)


# ── Retell (retell-sdk: retell.lib.webhook_auth) ────────────────────────────────────────────────────


def test_retell_sdk_signature_verifies_with_ours() -> None:
    signature = retell_symmetric["sign"](BODY.decode(), KEY, int(NOW * 1000))
    RetellVerifier([KEY]).verify(BODY, {"x-retell-signature": signature}, NOW)


def test_our_retell_signature_verifies_with_the_sdk() -> None:
    signature = retell_signature(BODY, KEY, int(time.time() * 1000))
    assert Retell(api_key=KEY).verify(BODY.decode(), KEY, signature) is True


def test_retell_refuses_tampered_body_stale_or_future_timestamp_wrong_secret_and_garbage() -> None:
    verifier = RetellVerifier([KEY])
    good = retell_signature(BODY, KEY, int(NOW * 1000))
    assert "does not match" in _refused(verifier, BODY.replace(b"c-1", b"c-2"), {"x-retell-signature": good})
    stale = retell_signature(BODY, KEY, int((NOW - 301) * 1000))
    assert "tolerance" in _refused(verifier, BODY, {"x-retell-signature": stale})
    future = retell_signature(BODY, KEY, int((NOW + 301) * 1000))
    assert "tolerance" in _refused(verifier, BODY, {"x-retell-signature": future})
    wrong = retell_signature(BODY, "key_someone_else", int(NOW * 1000))
    assert "does not match" in _refused(verifier, BODY, {"x-retell-signature": wrong})
    for garbage in ("", "v=,d=", "v=1,d=zz", "sha256=abc", "v=1" + "9" * 40 + ",d=" + "0" * 64, "\x00" * 90):
        assert _refused(verifier, BODY, {"x-retell-signature": garbage})
    assert "missing x-retell-signature" in _refused(verifier, BODY, {})
    # the SDK agrees on each refusal it can express
    assert not retell_symmetric["verify"](BODY.decode(), KEY, stale)
    assert not Retell(api_key=KEY).verify(BODY.replace(b"c-1", b"c-2").decode(), KEY, good)


def test_retell_accepts_the_previous_secret_while_rotating() -> None:
    signature = retell_signature(BODY, PREVIOUS, int(NOW * 1000))
    RetellVerifier([KEY, PREVIOUS]).verify(BODY, {"x-retell-signature": signature}, NOW)
    assert _refused(RetellVerifier([KEY]), BODY, {"x-retell-signature": signature})


def test_a_retell_verifier_checks_each_request_on_its_own_bytes() -> None:
    """The verifier keeps its secrets' keyed HMACs and hashes each request from a copy: one request's
    bytes never leak into the next check."""
    verifier = RetellVerifier([KEY, PREVIOUS])
    bodies = [BODY, b"{}", BODY + b" ", b""]
    for _ in range(2):
        for i, body in enumerate(bodies):
            stamp = int(NOW * 1000) + i
            for secret in (KEY, PREVIOUS):
                verifier.verify(body, {"x-retell-signature": retell_signature(body, secret, stamp)}, NOW)
            other = bodies[i - 1]
            assert _refused(verifier, body, {"x-retell-signature": retell_signature(other, KEY, stamp)})
            expected = hmac.new(KEY.encode(), body + str(stamp).encode(), hashlib.sha256).hexdigest()
            assert retell_signature(body, KEY, stamp) == f"v={stamp},d={expected}"


# ── ElevenLabs (elevenlabs SDK: WebhooksClient.construct_event) ─────────────────────────────────────


def _elevenlabs_sdk_accepts(body: bytes, header: str, secret: str) -> bool:
    try:
        ElevenLabs(api_key="unused").webhooks.construct_event(body.decode(), header, secret)
    except ApiError:
        return False
    return True


def test_our_elevenlabs_signature_verifies_with_the_sdk() -> None:
    header = elevenlabs_signature(BODY, "wsec_live", int(time.time()))
    assert _elevenlabs_sdk_accepts(BODY, header, "wsec_live")


@pytest.mark.parametrize(
    ("header_of", "body", "secret"),
    [
        (lambda now: elevenlabs_signature(BODY, "wsec_live", now), BODY, "wsec_live"),  # valid
        (lambda now: elevenlabs_signature(BODY, "wsec_live", now), BODY + b" ", "wsec_live"),  # tampered
        (lambda now: elevenlabs_signature(BODY, "wsec_live", now - 1900), BODY, "wsec_live"),  # stale
        (lambda now: elevenlabs_signature(BODY, "wsec_other", now), BODY, "wsec_live"),  # wrong secret
        (lambda now: f"t={now}", BODY, "wsec_live"),  # no v0
        (lambda now: "v0=" + "0" * 64, BODY, "wsec_live"),  # no t
    ],
)
def test_elevenlabs_agrees_with_the_sdk_on_what_is_authentic(header_of: object, body: bytes, secret: str) -> None:
    now = int(time.time())
    header = header_of(now)  # type: ignore[operator]
    theirs = _elevenlabs_sdk_accepts(body, header, secret)
    try:
        ElevenLabsVerifier([secret]).verify(body, {"elevenlabs-signature": header}, now)
        ours = True
    except Refused:
        ours = False
    assert ours == theirs


def test_elevenlabs_refuses_a_timestamp_far_in_the_future_the_sdk_would_take() -> None:
    header = elevenlabs_signature(BODY, "wsec_live", int(NOW) + 7200)
    assert _elevenlabs_sdk_accepts(BODY, header, "wsec_live")  # the SDK bounds only the past
    assert "tolerance" in _refused(ElevenLabsVerifier(["wsec_live"]), BODY, {"elevenlabs-signature": header})


def test_elevenlabs_rotation_and_garbage() -> None:
    header = elevenlabs_signature(BODY, "wsec_old", int(NOW))
    ElevenLabsVerifier(["wsec_new", "wsec_old"]).verify(BODY, {"elevenlabs-signature": header}, NOW)
    for garbage in ("t=abc,v0=00", "t=,v0=", "garbage", "t=1" + "0" * 30 + ",v0=ab"):
        assert "not of the form" in _refused(ElevenLabsVerifier(["wsec_new"]), BODY, {"elevenlabs-signature": garbage})


# ── Standard Webhooks (the standardwebhooks package) ───────────────────────────────────────────────


SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _standard(body: bytes, secret: str, at: float) -> dict[str, str]:
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(at, UTC), body)
    return {"webhook-id": "msg_1", "webhook-timestamp": str(int(at)), "webhook-signature": signature}


def test_standard_webhooks_signed_by_the_package_verify_and_tampering_is_refused() -> None:
    verifier = StandardWebhooksVerifier([SECRET])
    verifier.verify(BODY, _standard(BODY, SECRET, time.time()), NOW)
    assert "no matching signature" in _refused(verifier, BODY + b"x", _standard(BODY, SECRET, time.time()))
    assert "too old" in _refused(verifier, BODY, _standard(BODY, SECRET, time.time() - 600))
    other = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    assert _refused(verifier, BODY, _standard(BODY, other, time.time()))
    StandardWebhooksVerifier([other, SECRET]).verify(BODY, _standard(BODY, SECRET, time.time()), NOW)
    assert "missing webhook-id" in _refused(verifier, BODY, {"webhook-signature": "v1,abc"})


def test_invalid_utf8_bodies_are_verified_byte_for_byte() -> None:
    raw = b'{"x": "\xff\xfe"}'
    StandardWebhooksVerifier([SECRET]).verify(raw, _standard(raw, SECRET, time.time()), NOW)
    RetellVerifier([KEY]).verify(raw, {"x-retell-signature": retell_signature(raw, KEY, int(NOW * 1000))}, NOW)


# ── Vapi HMAC credential (documented: HMAC of "{timestamp}.{body}", hex) and tokens ─────────────────


def test_vapi_default_credential_is_hmac_sha256_hex_of_timestamp_dot_body() -> None:
    stamp = str(int(NOW * 1000))
    digest = hmac.new(b"vapi-secret", stamp.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    VapiHmacVerifier(["vapi-secret"]).verify(BODY, {"x-signature": digest, "x-timestamp": stamp}, NOW)
    seconds = str(int(NOW))
    digest = hmac.new(b"vapi-secret", seconds.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    VapiHmacVerifier(["vapi-secret"]).verify(BODY, {"x-signature": digest, "x-timestamp": seconds}, NOW)


def test_vapi_credential_variants_body_only_sha512_base64_prefix() -> None:
    verifier = VapiHmacVerifier(
        ["s"], algorithm="sha512", signature_header="x-vapi-signature", payload_format="{body}", encoding="base64",
        prefix="sha512=",
    )  # fmt: skip
    value = "sha512=" + base64.b64encode(hmac.new(b"s", BODY, hashlib.sha512).digest()).decode()
    verifier.verify(BODY, {"x-vapi-signature": value}, NOW)
    assert verifier.sign(BODY, "s", 0)["x-vapi-signature"] == value


def test_vapi_refusals() -> None:
    verifier = VapiHmacVerifier(["vapi-secret"])
    good = verifier.sign(BODY, "vapi-secret", int(NOW * 1000))
    assert "does not match" in _refused(verifier, BODY + b" ", good)
    assert "tolerance" in _refused(verifier, BODY, verifier.sign(BODY, "vapi-secret", int((NOW - 400) * 1000)))
    assert "does not match" in _refused(verifier, BODY, verifier.sign(BODY, "nope", int(NOW * 1000)))
    assert "missing x-timestamp" in _refused(verifier, BODY, {"x-signature": good["x-signature"]})
    assert "not hex" in _refused(verifier, BODY, {**good, "x-signature": "zz-not-hex"})
    assert "not a Unix timestamp" in _refused(verifier, BODY, {**good, "x-timestamp": "yesterday"})


VAPI_URL = "https://hooks.example.com/webhooks/vapi/acme"
B64_SECRET = base64.b64encode(b"\x00binary-key\xff").decode()  # secretIsBase64: the key is the decoded bytes


def test_vapi_every_placeholder_method_url_svix_id_and_a_base64_secret() -> None:
    """Vapi's payloadFormat placeholders, filled as its docs name them; the expected signature is built
    here by hand (hmac + base64), not by our signer."""
    verifier = VapiHmacVerifier(
        [B64_SECRET], algorithm="sha512", payload_format="{method} {url}|{svix-id}|{timestamp}|{body}",
        encoding="base64", prefix="v1,", url=VAPI_URL, message_id_header="x-message-id", secret_is_base64=True,
    )  # fmt: skip
    stamp = str(int(NOW))
    signed = b"POST " + VAPI_URL.encode() + b"|msg_42|" + stamp.encode() + b"|" + BODY
    value = "v1," + base64.b64encode(hmac.new(b"\x00binary-key\xff", signed, hashlib.sha512).digest()).decode()
    headers = {"x-signature": value, "x-timestamp": stamp, "x-message-id": "msg_42"}
    verifier.verify(BODY, headers, NOW)
    assert verifier.sign(BODY, B64_SECRET, int(NOW), "msg_42") == headers
    assert "does not match" in _refused(verifier, BODY, {**headers, "x-message-id": "msg_43"})
    assert "missing x-message-id" in _refused(verifier, BODY, {k: v for k, v in headers.items() if k != "x-message-id"})
    assert "does not match" in _refused(replace(verifier, url=VAPI_URL + "/other"), BODY, headers)
    # the secret's text is not the key
    assert "does not match" in _refused(replace(verifier, secret_is_base64=False), BODY, headers)
    assert "tolerance" in _refused(verifier, BODY, verifier.sign(BODY, B64_SECRET, int(NOW - 400), "msg_42"))


def test_vapi_credential_settings_it_cannot_use_are_refused_at_start_without_echoing_the_secret() -> None:
    with pytest.raises(ValueError, match="not base64") as caught:
        VapiHmacVerifier(["not base64!"], secret_is_base64=True)
    assert "not base64!" not in str(caught.value)
    with pytest.raises(ValueError, match=r"uses \{url\}"):
        VapiHmacVerifier(["s"], payload_format="{url}{body}")
    with pytest.raises(ValueError, match=r"uses \{svix-id\}"):
        VapiHmacVerifier(["s"], payload_format="{svix-id}.{body}")
    with pytest.raises(ValueError, match=r"unsupported placeholder \{path\}"):
        VapiHmacVerifier(["s"], payload_format="{path}.{body}")


def test_tokens_bearer_and_legacy_x_vapi_secret() -> None:
    TokenVerifier(["t0k3n", "old"]).verify(BODY, {"authorization": "Bearer old"}, NOW)
    TokenVerifier(["t0k3n"], header="x-vapi-secret", scheme="").verify(BODY, {"x-vapi-secret": "t0k3n"}, NOW)
    assert "valid token" in _refused(TokenVerifier(["t0k3n"]), BODY, {"authorization": "Bearer t0k3"})
    assert "is not `Bearer" in _refused(TokenVerifier(["t0k3n"]), BODY, {"authorization": "Basic t0k3n"})
    assert "missing x-vapi-secret" in _refused(TokenVerifier(["t"], header="x-vapi-secret", scheme=""), BODY, {})


def test_no_refusal_reveals_a_secret_or_the_expected_signature() -> None:
    verifier = RetellVerifier([KEY])
    expected = retell_signature(BODY, KEY, int(NOW * 1000)).split("d=")[1]
    message = _refused(verifier, BODY + b"!", {"x-retell-signature": retell_signature(BODY, KEY, int(NOW * 1000))})
    assert KEY not in message and expected not in message


# ── Garbage timestamps: a refusal, never another exception (issue 12, finding 11) ─────────────────

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GARBAGE_STAMPS = ["²", "\u0661\u0667\u0660\u0660", "9" * 5000, "-1", "1e9", "\x00"]


@pytest.mark.parametrize("stamp", GARBAGE_STAMPS, ids=repr)
def test_a_garbage_timestamp_is_refused_by_every_scheme_never_raised(stamp: str) -> None:
    """`²` passes str.isdigit() and then int() raised ValueError: a 500 instead of a 401."""
    vapi = VapiHmacVerifier(secrets=[KEY])
    cases = [
        (RetellVerifier(secrets=[KEY]), {"x-retell-signature": f"v={stamp},d={'ab' * 32}"}),
        (ElevenLabsVerifier(secrets=[KEY]), {"elevenlabs-signature": f"t={stamp},v0={'ab' * 32}"}),
        (vapi, {"x-signature": "ab" * 32, "x-timestamp": stamp}),
        (
            StandardWebhooksVerifier([WHSEC]),
            {"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"},
        ),
    ]
    for verifier, headers in cases:
        _refused(verifier, BODY, headers)
