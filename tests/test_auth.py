"""Tokens are verified: signature, issuer, audience and expiry all count."""

from __future__ import annotations

import time

import jwt
import pytest

from app.auth import TokenVerifier, bearer_token
from app.cli import main
from app.config import DEV_JWT_SECRET
from app.errors import Unauthenticated

VERIFIER = TokenVerifier(secret=DEV_JWT_SECRET, issuer="lumi", audience="lumi-gateway")


def forged(**overrides: object) -> str:
    claims = {"sub": "mallory", "iss": "lumi", "aud": "lumi-gateway", "exp": time.time() + 60}
    claims.update(overrides)
    secret = str(claims.pop("secret", DEV_JWT_SECRET))
    return jwt.encode(claims, secret, algorithm="HS256")


def test_a_minted_token_verifies_to_its_subject() -> None:
    claims = VERIFIER.verify(VERIFIER.mint("alice", name="Alice"))
    assert (claims.subject, claims.name) == ("alice", "Alice")


@pytest.mark.parametrize(
    "token",
    [
        forged(secret="another-secret-of-at-least-32-bytes!"),
        forged(exp=time.time() - 5),
        forged(aud="someone-else"),
        forged(iss="someone-else"),
        forged(sub=""),
        jwt.encode({"sub": "x", "exp": time.time() + 60}, "", algorithm="none"),
        "garbage",
    ],
    ids=["wrong-secret", "expired", "audience", "issuer", "empty-subject", "alg-none", "garbage"],
)
def test_a_token_that_does_not_verify_is_refused(token: str) -> None:
    with pytest.raises(Unauthenticated):
        VERIFIER.verify(token)


def test_only_bearer_authorization_is_accepted() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc"
    with pytest.raises(Unauthenticated):
        bearer_token("Basic dXNlcjpwYXNz")


def test_lumi_token_prints_a_token_for_the_named_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "newcomer"]) == 0
    token = capsys.readouterr().out.strip()
    assert VERIFIER.verify(token).subject == "newcomer"
