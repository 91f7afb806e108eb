"""Bearer tokens → claims. Identity comes only from a token whose signature verifies."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from app.config import Settings
from app.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    name: str


@dataclass(frozen=True, slots=True)
class Viewer:
    """The authenticated user of one operation."""

    id: str
    external_id: str
    display_name: str
    role: str


class TokenVerifier:
    """HS256 JWTs signed with the configured secret, issuer and audience."""

    algorithms = ("HS256",)

    def __init__(self, *, secret: str, issuer: str, audience: str) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            secret=settings.jwt_secret.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=list(self.algorithms),
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is invalid") from exc
        subject = str(payload["sub"]).strip()
        if not subject or len(subject) > 191:
            raise Unauthenticated("the token's subject is invalid")
        return Claims(subject=subject, name=str(payload.get("name") or subject)[:100])

    def mint(self, subject: str, *, name: str | None = None, ttl_seconds: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "name": name or subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None when absent."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
