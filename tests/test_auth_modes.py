"""The other ways a token becomes a user: an identity provider's JWKS, and a user service.

Both meet a fake identity provider over loopback (tests/fakes/identity.py); an outage of
it is AUTH_UNAVAILABLE, never an internal error, and no token reaches a log line."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import ConnectionClosed

from app.auth import (
    Claims,
    JwksVerifier,
    MemoryClaimsCache,
    RedisClaimsCache,
    TokenVerifier,
    UserServiceAuthenticator,
    build_authenticator,
)
from app.cli import main
from app.errors import AuthUnavailable, Unauthenticated
from tests.conftest import REDIS, free_port, make_settings, require, start_server, stop_server
from tests.fakes.identity import IdentityClient, SigningKey, start_fake_identity

ISSUER, AUDIENCE = "lumi", "lumi-gateway"
KEY = SigningKey.rsa("key-1")
ROTATED = SigningKey.rsa("key-2")
IMPOSTOR = SigningKey.rsa("key-1")  # the provider's kid, someone else's key
EC_KEY = SigningKey.ec("ec-1")
TIMEOUT = 0.3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def claims(**overrides: Any) -> dict[str, Any]:
    values = {"sub": "ada", "name": "Ada", "iss": ISSUER, "aud": AUDIENCE}
    values["exp"] = int(time.time()) + 60
    values.update(overrides)
    return values


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_the_public_key(key: SigningKey) -> str:
    """The algorithm confusion attack: HS256, keyed with the provider's public key."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: a provider that is down


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityClient]:
    fake = start_fake_identity(log=tmp_path_factory.mktemp("identity") / "fake.log")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def idp(identity: IdentityClient) -> IdentityClient:
    """The shared fake, emptied: publishing KEY and EC_KEY, knowing no user."""
    await identity.reset()
    await identity.publish(KEY, EC_KEY)
    return identity


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def jwks_verifier(
    url: str, http: httpx.AsyncClient, clock: Clock | None = None, **options: Any
) -> JwksVerifier:
    return JwksVerifier(
        url=url,
        http=http,
        issuer=ISSUER,
        audience=AUDIENCE,
        timeout=TIMEOUT,
        clock=clock or Clock(),
        **options,
    )


# --- JWKS ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, EC_KEY], ids=["RS256", "ES256"])
async def test_a_token_signed_by_the_providers_key_verifies(
    idp: IdentityClient, http: httpx.AsyncClient, key: SigningKey
) -> None:
    verifier = jwks_verifier(idp.jwks_url, http)
    assert await verifier.authenticate(key.sign(claims())) == Claims("ada", "Ada")


# Made when the test runs: tokens made at collection could expire before it does.
REFUSED: dict[str, Callable[[], str]] = {
    "wrong-key": lambda: IMPOSTOR.sign(claims()),
    "expired": lambda: KEY.sign(claims(exp=int(time.time()) - 5)),
    "audience": lambda: KEY.sign(claims(aud="someone-else")),
    "issuer": lambda: KEY.sign(claims(iss="someone-else")),
    "empty-subject": lambda: KEY.sign(claims(sub="")),
    "no-expiry": lambda: KEY.sign({k: v for k, v in claims().items() if k != "exp"}),
    "alg-none": lambda: jwt.encode(claims(), "", algorithm="none", headers={"kid": KEY.kid}),
    "hs256-with-public-key": lambda: hs256_with_the_public_key(KEY),
    "es256-on-an-rsa-key": lambda: jwt.encode(
        claims(), EC_KEY.private, algorithm="ES256", headers={"kid": KEY.kid}
    ),
    "no-kid": lambda: jwt.encode(claims(), KEY.private, algorithm="RS256"),
    "garbage": lambda: "garbage",
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
async def test_a_token_that_does_not_verify_is_refused(
    idp: IdentityClient, http: httpx.AsyncClient, make: Callable[[], str]
) -> None:
    verifier = jwks_verifier(idp.jwks_url, http)
    assert (await verifier.authenticate(KEY.sign(claims()))).subject == "ada"
    with pytest.raises(Unauthenticated):
        await verifier.authenticate(make())


async def test_keys_are_fetched_once_for_many_verifications(
    idp: IdentityClient, http: httpx.AsyncClient
) -> None:
    verifier = jwks_verifier(idp.jwks_url, http)
    token = KEY.sign(claims())
    await asyncio.gather(*(verifier.authenticate(token) for _ in range(10)))  # coalesced
    for _ in range(10):
        await verifier.authenticate(token)
    assert len(await idp.calls("/jwks.json")) == 1


async def test_a_rotated_key_is_fetched_once_and_unknown_kids_are_throttled(
    idp: IdentityClient, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(idp.jwks_url, http, clock, refetch_seconds=10)
    await verifier.authenticate(KEY.sign(claims()))
    await idp.publish(KEY, ROTATED)
    clock.advance(11)
    assert (await verifier.authenticate(ROTATED.sign(claims()))).subject == "ada"
    assert len(await idp.calls("/jwks.json")) == 2

    async def made_up_kid() -> None:
        with pytest.raises(Unauthenticated):
            await verifier.authenticate(IMPOSTOR.sign(claims(), kid=uuid.uuid4().hex))

    await asyncio.gather(*(made_up_kid() for _ in range(20)))  # right after a fetch: none
    assert len(await idp.calls("/jwks.json")) == 2
    clock.advance(11)
    await asyncio.gather(*(made_up_kid() for _ in range(20)))
    for _ in range(5):
        await made_up_kid()
    assert len(await idp.calls("/jwks.json")) == 3  # one per 10 s, however many kids
    clock.advance(5)
    await made_up_kid()
    assert len(await idp.calls("/jwks.json")) == 3
    clock.advance(6)
    await made_up_kid()
    assert len(await idp.calls("/jwks.json")) == 4


@pytest.mark.parametrize(
    "failure",
    [None, {"status": 500}, {"status": 404}, {"delay": 2}, {"text": "<html>"}, {"body": {}}],
    ids=["down", "500", "404", "timeout", "not-json", "not-a-jwks"],
)
async def test_without_keys_an_unreachable_provider_is_auth_unavailable(
    idp: IdentityClient,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, Any] | None,
) -> None:
    url = closed_url()
    if failure is not None:
        await idp.fail(**failure)
        url = idp.jwks_url
    verifier = jwks_verifier(url, http)
    token = KEY.sign(claims())
    with caplog.at_level(logging.WARNING, logger="app.auth"):
        for _ in range(3):  # the first asks; the others are throttled, not hammering
            with pytest.raises(AuthUnavailable) as raised:
                await verifier.authenticate(token)
    assert raised.value.code == "AUTH_UNAVAILABLE"
    assert len(await idp.calls("/jwks.json")) == (0 if failure is None else 1)
    assert "JWKS could not be fetched" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text + raised.value.message


async def test_cached_keys_keep_working_while_the_provider_is_down(
    idp: IdentityClient, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(idp.jwks_url, http, clock, cache_seconds=300)
    token = KEY.sign(claims())
    await verifier.authenticate(token)
    await idp.fail(status=503)
    clock.advance(301)  # the keys are due for a refetch, which fails
    assert (await verifier.authenticate(token)).subject == "ada"
    assert [call["status"] for call in await idp.calls("/jwks.json")] == [200, 503]
    with pytest.raises(AuthUnavailable):  # maybe a new key: we cannot tell now
        await verifier.authenticate(ROTATED.sign(claims()))
    await idp.fail()
    await idp.publish(KEY, ROTATED)
    clock.advance(11)
    assert (await verifier.authenticate(ROTATED.sign(claims()))).subject == "ada"
    assert len(await idp.calls("/jwks.json")) == 3


# --- the user service ----------------------------------------------------------------


def user_service(
    url: str, http: httpx.AsyncClient, cache: Any = None, **options: Any
) -> UserServiceAuthenticator:
    return UserServiceAuthenticator(
        url=url, http=http, cache=cache or MemoryClaimsCache(), timeout=TIMEOUT, **options
    )


def opaque_token() -> str:
    return f"opaque-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"id": "u-1", "name": "Ada"}, Claims("u-1", "Ada")),
        ({"sub": "u-2", "displayName": "Grace"}, Claims("u-2", "Grace")),
        ({"id": 42}, Claims("42", "")),  # no name: never the subject
    ],
    ids=["id-name", "sub-displayName", "id-only"],
)
async def test_the_user_service_names_the_user(
    idp: IdentityClient, http: httpx.AsyncClient, answer: dict[str, Any], expected: Claims
) -> None:
    token = opaque_token()
    await idp.add_user(token, answer)
    assert await user_service(idp.url, http).authenticate(token) == expected
    [call] = await idp.calls("/me")
    assert call["status"] == 200


@pytest.mark.parametrize("status", [401, 403])
async def test_a_token_the_user_service_refuses_is_unauthenticated_and_not_cached(
    idp: IdentityClient, http: httpx.AsyncClient, status: int
) -> None:
    if status == 403:
        await idp.fail(status=403)
    authenticator = user_service(idp.url, http)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(opaque_token() if status == 401 else "any")
    assert [call["status"] for call in await idp.calls("/me")] == [status, status]


async def test_answers_are_cached_in_memory_for_their_time(
    idp: IdentityClient, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    token = opaque_token()
    await idp.add_user(token, {"id": "u-1", "name": "Ada"})
    authenticator = user_service(idp.url, http, MemoryClaimsCache(clock=clock), cache_seconds=60)
    for _ in range(3):
        assert (await authenticator.authenticate(token)).subject == "u-1"
    assert len(await idp.calls("/me")) == 1
    clock.advance(61)
    await authenticator.authenticate(token)
    assert len(await idp.calls("/me")) == 2


async def test_the_memory_cache_is_bounded() -> None:
    cache = MemoryClaimsCache(max_entries=2)
    for name in ("a", "b", "c"):
        await cache.put(name, Claims(name, name), 60)
    assert [await cache.get(name) for name in ("a", "b", "c")] == [
        None,
        Claims("b", "b"),
        Claims("c", "c"),
    ]


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    require("Redis", REDIS)
    from redis.asyncio import Redis

    client = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    yield client
    await client.aclose()


async def test_answers_are_cached_in_redis_under_the_tokens_hash(
    idp: IdentityClient, http: httpx.AsyncClient, redis_client: Any
) -> None:
    namespace = f"lumi-test-{uuid.uuid4().hex[:12]}"
    token = opaque_token()
    await idp.add_user(token, {"id": "u-1", "name": "Ada"})
    try:
        first = user_service(
            idp.url, http, RedisClaimsCache(redis_client, prefix=namespace), cache_seconds=60
        )
        assert (await first.authenticate(token)).subject == "u-1"
        keys = [key.decode() async for key in redis_client.scan_iter(f"{namespace}:*")]
        digest = hashlib.sha256(token.encode()).hexdigest()
        assert keys == [f"{namespace}:auth:me:{digest}"]
        assert token not in keys[0]
        assert token.encode() not in await redis_client.get(keys[0])
        assert 0 < await redis_client.ttl(keys[0]) <= 60
        # Another API process, sharing Redis: no call to the user service.
        second = user_service(idp.url, http, RedisClaimsCache(redis_client, prefix=namespace))
        assert await second.authenticate(token) == Claims("u-1", "Ada")
        assert len(await idp.calls("/me")) == 1
    finally:
        async for key in redis_client.scan_iter(f"{namespace}:*"):
            await redis_client.delete(key)


async def test_a_redis_outage_falls_back_to_the_user_service(
    idp: IdentityClient, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    from redis.asyncio import Redis

    token = opaque_token()
    await idp.add_user(token, {"id": "u-1", "name": "Ada"})
    broken = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        authenticator = user_service(idp.url, http, RedisClaimsCache(broken, prefix="lumi"))
        with caplog.at_level(logging.WARNING, logger="app.auth"):
            for _ in range(2):
                assert (await authenticator.authenticate(token)).subject == "u-1"
    finally:
        await broken.aclose()
    assert len(await idp.calls("/me")) == 2
    assert "the auth cache in Redis is unavailable" in caplog.text
    assert token not in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        None,
        {"status": 500},
        {"status": 429},
        {"delay": 2},
        {"text": "<html>"},
        {"body": {"user": "?"}},
    ],
    ids=["down", "500", "429", "timeout", "not-json", "no-id"],
)
async def test_an_unavailable_user_service_is_auth_unavailable(
    idp: IdentityClient,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, Any] | None,
) -> None:
    token = opaque_token()
    await idp.add_user(token, {"id": "u-1"})
    url = closed_url()
    if failure is not None:
        await idp.fail(**failure)
        url = idp.url
    authenticator = user_service(url, http)
    with (
        caplog.at_level(logging.WARNING, logger="app.auth"),
        pytest.raises(AuthUnavailable) as raised,
    ):
        await authenticator.authenticate(token)
    assert "the user service could not answer" in caplog.text
    assert token not in caplog.text + raised.value.message


# --- wiring --------------------------------------------------------------------------


async def test_the_auth_mode_picks_the_authenticator(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    def build(redis: Any = None, **settings: Any) -> Any:
        return build_authenticator(make_settings(tmp_path, **settings), http=http, redis=redis)

    assert isinstance(build(), TokenVerifier)
    assert isinstance(build(auth_mode="jwks", jwks_url="http://idp/jwks"), JwksVerifier)
    service = build(auth_mode="user-service", user_service_url="http://users")
    assert isinstance(service, UserServiceAuthenticator)
    assert isinstance(service._cache, MemoryClaimsCache)
    shared = build(object(), auth_mode="user-service", user_service_url="http://users")
    assert isinstance(shared._cache, RedisClaimsCache)


def test_lumi_token_refuses_outside_hs256(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LUMI_AUTH_MODE", "jwks")
    monkeypatch.setenv("LUMI_JWKS_URL", "http://idp/jwks")
    assert main(["token", "--user", "newcomer"]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert "LUMI_AUTH_MODE is jwks" in output.err


# --- end to end: the real app under uvicorn -----------------------------------------

ME = {"query": "{ me { id displayName } }"}


async def me(url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=ME, headers={"Authorization": f"Bearer {token}"})


async def ws_close_code(url: str, token: str) -> int | None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.fixture
def users(tmp_path: Path) -> Iterator[IdentityClient]:
    """A fake user service of this test's own, which it may stop."""
    fake = start_fake_identity(log=tmp_path / "users.log")
    try:
        yield fake
    finally:
        fake.stop()  # again, if the test stopped it: a no-op


@pytest.mark.e2e
async def test_user_service_mode_end_to_end_and_its_outage(
    tmp_path: Path, users: IdentityClient
) -> None:
    known, unseen = opaque_token(), opaque_token()
    await users.add_user(known, {"id": "svc-ada", "name": "Ada"})
    await users.add_user(unseen, {"id": "svc-bob", "name": "Bob"})
    server = start_server(
        tmp_path / "data",
        name="user-service",
        LUMI_AUTH_MODE="user-service",
        LUMI_USER_SERVICE_URL=users.url,
        LUMI_AUTH_TIMEOUT_SECONDS="1",
    )
    try:
        response = await me(server.graphql, known)
        assert response.json()["data"]["me"]["displayName"] == "Ada"
        refused = (await me(server.graphql, opaque_token())).json()["errors"][0]
        assert refused["extensions"]["code"] == "UNAUTHENTICATED"

        users.stop()
        response = await me(server.graphql, unseen)
        assert response.status_code < 500
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "AUTH_UNAVAILABLE", error
        assert "identity service is unavailable" in error["message"]
        # The answer cached for a minute still serves the known token.
        assert (await me(server.graphql, known)).json()["data"]["me"]["displayName"] == "Ada"
        assert await ws_close_code(server.ws, unseen) == 4403
    finally:
        stop_server(server)
    log = server.log.read_text()
    assert "the user service could not answer" in log
    assert known not in log
    assert unseen not in log


@pytest.mark.e2e
async def test_jwks_mode_end_to_end(tmp_path: Path, idp: IdentityClient) -> None:
    server = start_server(
        tmp_path / "data", name="jwks", LUMI_AUTH_MODE="jwks", LUMI_JWKS_URL=idp.jwks_url
    )
    try:
        response = await me(server.graphql, KEY.sign(claims(sub="idp-ada", name="Ada IdP")))
        assert response.json()["data"]["me"]["displayName"] == "Ada IdP"
        forged = await me(server.graphql, IMPOSTOR.sign(claims()))
        assert forged.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        stop_server(server)
