"""Standard Webhooks signatures, checked by the reference library (`standardwebhooks`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.dispatcher.signing import Signer, decode_secret, verify
from tests.unit.dispatcher.conftest import SECRET, SECRET_2

BODY = b'{"status":"closed","n":1}'


def test_signature_verifies_with_the_reference_library() -> None:
    headers = Signer([SECRET]).headers("act_123", BODY)
    assert Webhook(SECRET).verify(BODY, headers) == {"status": "closed", "n": 1}


def test_the_signature_is_the_specs_hmac_over_the_id_the_timestamp_and_the_raw_body() -> None:
    """Computed here without the library: standardwebhooks before 1.3 signed `f"{id}.{ts}.{data}"`,
    so the bytes body we pass was signed as its repr (b'...') and no receiver could verify it."""
    body = '{"note":"Grüße"}'.encode()
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"act_123.1700000000." + body, hashlib.sha256).digest()
    headers = Signer([SECRET]).headers("act_123", body, timestamp=1_700_000_000)
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    headers = Signer([SECRET_2, SECRET]).headers("act_123", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, SECRET_2):
        Webhook(secret).verify(BODY, headers)
        assert verify([secret], headers, BODY)


def test_a_secret_not_signing_fails_verification() -> None:
    headers = Signer([SECRET]).headers("act_123", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_2).verify(BODY, headers)
    assert not verify([SECRET_2], headers, BODY)


def test_tampered_body_fails_verification() -> None:
    headers = Signer([SECRET]).headers("act_123", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY + b" ", headers)
    assert not verify([SECRET], headers, BODY + b" ")


def test_headers_carry_the_action_id_and_a_current_timestamp() -> None:
    headers = Signer([SECRET]).headers("act_123", BODY)
    assert headers["webhook-id"] == "act_123"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


def test_old_timestamp_is_rejected_by_verify() -> None:
    headers = Signer([SECRET]).headers("act_1", BODY, timestamp=int(time.time()) - 3600)
    assert not verify([SECRET], headers, BODY)
    assert verify([SECRET], headers, BODY, now=time.time() - 3600)


@pytest.mark.parametrize("bad", ["whsec_c2hvcnQ=", "whsec_not base64!!", ""])
def test_malformed_or_short_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_secret(bad)


def test_a_webhook_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError):
        Signer([SECRET]).headers("a.b", BODY)


GARBAGE = [
    {"webhook-timestamp": "²"},  # str.isdigit() says yes, int() says no
    {"webhook-timestamp": "\u0661\u0667" + "\u0660" * 8},  # Arabic-Indic digits
    {"webhook-timestamp": "9" * 5000},  # over int()'s digit limit
    {"webhook-timestamp": "-1"},
    {"webhook-timestamp": " 1700000000"},
    {"webhook-signature": "v1,ü"},  # hmac.compare_digest refuses non-ASCII text
    {"webhook-signature": "v1," + "A" * 100_000},
    {"webhook-id": "a\x00b"},
]


@pytest.mark.parametrize("change", GARBAGE, ids=lambda c: repr(next(iter(c.values())))[:30])
def test_garbage_in_any_signature_header_is_false_never_an_exception(change: dict[str, str]) -> None:
    headers = {**Signer([SECRET]).headers("msg_1", BODY), **change}
    assert verify([SECRET], headers, BODY) is False
