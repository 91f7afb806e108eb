"""Bearer tokens → claims. Identity comes only from a token whose signature verifies, or
from the user service's answer for it.

Three authenticators (`LUMI_AUTH_MODE`): HS256 JWTs signed with our own secret, RS256 or
ES256 JWTs signed by an identity provider whose keys are published as a JWKS, and opaque
tokens the user service resolves at `GET /me`. A token is refused with `Unauthenticated`;
an identity service that cannot answer is `AuthUnavailable`, never an internal error.
No token, signature or key is ever logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
from redis.exceptions import RedisError

from app.config import Settings
from app.errors import AuthUnavailable, Unauthenticated

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a token is. `name` is empty when the token names no one: the subject is never
    a stand-in for it, since it may be an e-mail address and names are public."""

    subject: str
    name: str


@dataclass(frozen=True, slots=True)
class Viewer:
    """The authenticated user of one operation."""

    id: str
    external_id: str
    display_name: str
    role: str


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Claims:
        """The claims of a valid token; `Unauthenticated` for one that is not, and
        `AuthUnavailable` when the identity service needed to tell cannot answer."""
        ...


def _claims(subject: str, name: str) -> Claims:
    subject = subject.strip()
    if not subject or len(subject) > 191:
        raise Unauthenticated("the token's subject is invalid")
    return Claims(subject=subject, name=name.strip()[:100])


def _decode(token: str, key: Any, algorithm: str, *, issuer: str, audience: str) -> Claims:
    """A JWT's claims after its signature (by `algorithm` only), issuer, audience and
    expiry are checked."""
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated("the token is invalid") from exc
    return _claims(str(payload["sub"]), str(payload.get("name") or ""))


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
        return _decode(token, self._secret, "HS256", issuer=self._issuer, audience=self._audience)

    async def authenticate(self, token: str) -> Claims:
        return self.verify(token)

    def mint(self, subject: str, *, name: str | None = None, ttl_seconds: int = 3600) -> str:
        """A token for `subject`, with a `name` claim only when `name` is given."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        if name:
            claims["name"] = name
        return jwt.encode(claims, self._secret, algorithm="HS256")


# A token's `alg` must be the one algorithm its key's type signs with, so `none` and
# HS256-with-the-public-key (algorithm confusion) never verify.
_ASYMMETRIC = ("RS256", "ES256")


def _key_algorithm(jwk: dict[str, Any]) -> str | None:
    if jwk.get("kty") == "RSA":
        return "RS256"
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    return None


def signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by `kid`; other keys are left out.

    `ValueError` when `document` is no JWKS at all."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        algorithm = _key_algorithm(entry)
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            log.warning("JWKS key %r is malformed; ignored", entry["kid"][:64])
    return keys


def _outage(exc: Exception) -> str:
    """What went wrong talking to an identity service, without URLs, headers or bodies."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


class JwksVerifier:
    """JWTs signed by an identity provider, checked against the keys of its JWKS.

    Keys are fetched once per `cache_seconds`. A token naming an unknown `kid` (a rotated
    key) refetches early, at most once per `refetch_seconds` so made-up kids cannot
    hammer the provider; concurrent fetches share one request. When the provider is
    down, the keys fetched last keep working."""

    def __init__(
        self,
        *,
        url: str,
        http: httpx.AsyncClient,
        issuer: str,
        audience: str,
        cache_seconds: float = 300,
        refetch_seconds: float = 10,
        timeout: float = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._issuer = issuer
        self._audience = audience
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # the last successful fetch
        self._attempted_at = -math.inf  # the last fetch, successful or not
        self._failing = False  # whether the last fetch failed
        self._lock = asyncio.Lock()

    async def authenticate(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is invalid") from exc
        kid = header.get("kid")
        if header.get("alg") not in _ASYMMETRIC or not isinstance(kid, str):
            raise Unauthenticated("the token is invalid")
        key = await self._key(kid)
        if header["alg"] != key.algorithm_name:
            raise Unauthenticated("the token is invalid")
        return _decode(
            token, key.key, key.algorithm_name, issuer=self._issuer, audience=self._audience
        )

    async def _key(self, kid: str) -> jwt.PyJWK:
        if not self._has(kid):
            async with self._lock:  # whoever waited here finds the keys the first fetched
                if not self._has(kid) and self._may_fetch():
                    await self._fetch()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._failing:  # it may be a new key the provider cannot tell us about now
            raise AuthUnavailable()
        raise Unauthenticated("the token's signing key is unknown")

    def _has(self, kid: str) -> bool:
        return kid in self._keys and self._clock() - self._fetched_at < self._cache_seconds

    def _may_fetch(self) -> bool:
        return self._clock() - self._attempted_at >= self._refetch_seconds

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            response = await self._http.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            keys = signing_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._failing = True
            log.warning(
                "the JWKS could not be fetched (%s); %d cached key(s) stay in use",
                _outage(exc),
                len(self._keys),
            )
            return
        self._keys, self._fetched_at, self._failing = keys, self._attempted_at, False


class ClaimsCache(Protocol):
    async def get(self, key: str) -> Claims | None: ...

    async def put(self, key: str, claims: Claims, ttl: float) -> None: ...


class MemoryClaimsCache:
    """Per process, at most `max_entries`; the oldest entries make room."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[str, tuple[float, Claims]] = {}
        self._max_entries = max_entries
        self._clock = clock

    async def get(self, key: str) -> Claims | None:
        until, claims = self._entries.get(key, (0.0, None))
        if claims is not None and until <= self._clock():
            del self._entries[key]
            return None
        return claims

    async def put(self, key: str, claims: Claims, ttl: float) -> None:
        now = self._clock()
        if len(self._entries) >= self._max_entries:
            for stale in [k for k, (until, _) in self._entries.items() if until <= now]:
                del self._entries[stale]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries.pop(key, None)  # re-inserted last: the newest
        self._entries[key] = (now + ttl, claims)


class RedisClaimsCache:
    """Shared by every API process. A Redis outage is a miss, never a failure."""

    def __init__(self, client: Any, *, prefix: str, timeout: float = 1.0) -> None:
        self._redis = client
        self._prefix = f"{prefix}:auth:me:"
        self._timeout = timeout

    async def get(self, key: str) -> Claims | None:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.get(self._prefix + key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("the auth cache in Redis is unavailable (%s)", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return Claims(subject=str(value["id"]), name=str(value["name"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, key: str, claims: Claims, ttl: float) -> None:
        value = json.dumps({"id": claims.subject, "name": claims.name})
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("the auth cache in Redis is unavailable (%s)", type(exc).__name__)


def _user(body: Any) -> Claims:
    """The claims of a `/me` answer: `{"id", "name"?}` (or `sub`, `displayName`)."""
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    subject = body.get("id", body.get("sub"))
    if isinstance(subject, bool) or not isinstance(subject, str | int) or not str(subject):
        raise ValueError("the answer has no id")
    name = body.get("name") or body.get("displayName")
    return _claims(str(subject), name if isinstance(name, str) else "")


class UserServiceAuthenticator:
    """Opaque tokens, resolved by the user service: `GET {url}/me` with the token.

    Answers are kept for `cache_seconds` under the token's SHA-256, never the token;
    refusals are not kept."""

    def __init__(
        self,
        *,
        url: str,
        http: httpx.AsyncClient,
        cache: ClaimsCache,
        cache_seconds: float = 60,
        timeout: float = 3,
    ) -> None:
        self._url = url.rstrip("/") + "/me"
        self._http = http
        self._cache = cache
        self._cache_seconds = cache_seconds
        self._timeout = timeout

    async def authenticate(self, token: str) -> Claims:
        digest = hashlib.sha256(token.encode()).hexdigest()
        claims = await self._cache.get(digest)
        if claims is None:
            claims = await self._ask(token)
            await self._cache.put(digest, claims, self._cache_seconds)
        return claims

    async def _ask(self, token: str) -> Claims:
        try:
            response = await self._http.get(
                self._url, headers={"Authorization": f"Bearer {token}"}, timeout=self._timeout
            )
            if response.status_code in (401, 403):
                raise Unauthenticated("the token was refused")
            response.raise_for_status()
            return _user(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("the user service could not answer (%s)", _outage(exc))
            raise AuthUnavailable() from exc


def build_authenticator(
    settings: Settings, *, http: httpx.AsyncClient, redis: Any
) -> Authenticator:
    """The authenticator `settings.auth_mode` names; `redis` (or None) holds the shared
    user service cache."""
    timeout = settings.auth_timeout_seconds
    if settings.auth_mode == "jwks":
        assert settings.jwks_url, "Settings checks jwks mode has its URL"
        return JwksVerifier(
            url=settings.jwks_url,
            http=http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
            timeout=timeout,
        )
    if settings.auth_mode == "user-service":
        assert settings.user_service_url, "Settings checks user-service mode has its URL"
        cache: ClaimsCache = (
            RedisClaimsCache(redis, prefix=settings.redis_namespace, timeout=timeout)
            if redis is not None
            else MemoryClaimsCache()
        )
        return UserServiceAuthenticator(
            url=settings.user_service_url,
            http=http,
            cache=cache,
            cache_seconds=settings.user_service_cache_seconds,
            timeout=timeout,
        )
    return TokenVerifier.from_settings(settings)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None when absent."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
