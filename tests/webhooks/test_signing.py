"""Signatures a Standard Webhooks receiver accepts: checked with a verifier written from
the specification in tests/webhooks/receiver.py and with the reference library, not with
the gateway's own code."""

from __future__ import annotations

import base64
import time

from app.webhooks import signing
from tests.webhooks.receiver import verified_by_reference, verify


def test_a_signed_call_verifies_with_an_independent_implementation() -> None:
    secret = signing.new_secret()
    body = b'{"type":"request.updated","data":{"seq":1}}'
    headers = signing.headers([secret], "msg_1", 1_700_000_000, body)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")  # the body is signed
    assert not verify(signing.new_secret(), headers, body)
    changed = {**headers, "webhook-timestamp": "1700000001"}
    assert not verify(secret, changed, body)  # so is the timestamp


def test_a_signed_call_verifies_with_the_reference_library() -> None:
    secret = signing.new_secret()
    body = b'{"type":"request.updated","data":{"seq":1}}'
    now = int(time.time())
    assert verified_by_reference(secret, signing.headers([secret], "msg_1", now, body), body)
    rotated = signing.headers([signing.new_secret(), secret], "msg_2", now, body)
    assert verified_by_reference(secret, rotated, body)  # either secret of a rotation
    assert not verified_by_reference(signing.new_secret(), rotated, body)
    stale = signing.headers([secret], "msg_3", now - 600, body)
    assert not verified_by_reference(secret, stale, body)  # what it refuses, we sign


def test_a_secret_is_whsec_and_base64_of_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert secret != signing.new_secret()


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = b"{}"
    headers = signing.headers([new, old], "msg_2", 1_700_000_000, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(old, headers, body)
    assert verify(new, headers, body)


def test_the_signature_matches_the_specifications_example() -> None:
    """The example of the Standard Webhooks specification (its README's test vector)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = signing.headers([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
