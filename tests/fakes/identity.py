"""A fake identity provider: a JWKS document and a user service's `GET /me`.

    GET  /jwks.json   -> {"keys": [...]}, the public keys a test set
    GET  /me          -> 200 with the user a test set for the bearer token; 401 otherwise

Tests script it over HTTP, so the gateway under uvicorn meets what the test wrote:

    POST /_fake/keys   {"keys": [jwk, ...]}                  the JWKS served from now on
    POST /_fake/users  {"users": {"<token>": {"id", "name"}}} the `/me` answer per token
    POST /_fake/fail   {"status": 500} | {"delay": 5} | {"text": "<html>"} | {"body": {}}
                       every identity route answers so until told `{}` or reset
    GET  /_fake/calls  -> {"calls": [{"path", "status", "at"}]}
    POST /_fake/reset

`SigningKey` is the provider's side of a key: it signs tokens and publishes its JWK.
Over loopback: `start_fake_identity()` or `python -m tests.fakes.identity --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes import start_fake_module


@dataclass
class SigningKey:
    """A provider's private key, its `kid` and algorithm."""

    kid: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or uuid.uuid4().hex, private, "RS256")

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or uuid.uuid4().hex, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


@dataclass
class FakeIdentity:
    keys: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def answer(self, request: Request, ok: Callable[[], Response]) -> Response:
        """The scripted failure if there is one, else `ok()`; logged either way."""
        failure = self.failure
        response: Response
        if "text" in failure:
            response = PlainTextResponse(
                str(failure["text"]), status_code=failure.get("status", 200)
            )
        elif "body" in failure:
            response = JSONResponse(failure["body"], status_code=failure.get("status", 200))
        elif "status" in failure:
            response = JSONResponse({"error": "scripted"}, status_code=int(failure["status"]))
        else:
            response = ok()
        self.calls.append(
            {"path": request.url.path, "status": response.status_code, "at": time.time()}
        )
        if failure.get("delay"):
            await asyncio.sleep(float(failure["delay"]))
        return response

    async def jwks(self, request: Request) -> Response:
        return await self.answer(request, lambda: JSONResponse({"keys": self.keys}))

    async def me(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self.users.get(token) if scheme == "Bearer" else None
        if user is None:
            return await self.answer(request, lambda: JSONResponse({"error": "unknown"}, 401))
        return await self.answer(request, lambda: JSONResponse(user))

    async def set_keys(self, request: Request) -> Response:
        self.keys[:] = (await request.json())["keys"]
        return JSONResponse({"keys": len(self.keys)})

    async def set_users(self, request: Request) -> Response:
        self.users.update((await request.json())["users"])
        return JSONResponse({"users": len(self.users)})

    async def set_failure(self, request: Request) -> Response:
        self.failure = dict(await request.json())
        return JSONResponse(self.failure)

    async def get_calls(self, request: Request) -> Response:
        return JSONResponse({"calls": self.calls})

    async def reset(self, request: Request) -> Response:
        self.keys.clear()
        self.users.clear()
        self.failure = {}
        self.calls.clear()
        return JSONResponse({})


def create_fake_app() -> Starlette:
    """The fake as an ASGI app; `app.state.fake` is its `FakeIdentity`."""
    fake = FakeIdentity()
    app = Starlette(
        routes=[
            Route("/jwks.json", fake.jwks),
            Route("/me", fake.me),
            Route("/_fake/keys", fake.set_keys, methods=["POST"]),
            Route("/_fake/users", fake.set_users, methods=["POST"]),
            Route("/_fake/fail", fake.set_failure, methods=["POST"]),
            Route("/_fake/calls", fake.get_calls),
            Route("/_fake/reset", fake.reset, methods=["POST"]),
        ]
    )
    app.state.fake = fake
    return app


class IdentityClient:
    """A test's handle on a running fake: its URLs, and its script over HTTP."""

    def __init__(self, url: str, stop: Callable[[], None]) -> None:
        self.url = url
        self.jwks_url = f"{url}/jwks.json"
        self.stop = stop

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            (await client.post(path, json=body)).raise_for_status()

    async def publish(self, *keys: SigningKey) -> None:
        await self._post("/_fake/keys", {"keys": [key.jwk() for key in keys]})

    async def add_user(self, token: str, answer: dict[str, Any]) -> None:
        await self._post("/_fake/users", {"users": {token: answer}})

    async def fail(self, **failure: Any) -> None:
        """e.g. `fail(status=500)`, `fail(delay=2)`, `fail(text="<html>")`; `fail()` heals."""
        await self._post("/_fake/fail", failure)

    async def reset(self) -> None:
        await self._post("/_fake/reset", {})

    async def calls(self, path: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            calls: list[dict[str, Any]] = (await client.get("/_fake/calls")).json()["calls"]
        return [call for call in calls if call["path"] == path]


def start_fake_identity(*, log: Path | None = None) -> IdentityClient:
    """The fake in a subprocess on a free loopback port."""
    url, stop = start_fake_module("tests.fakes.identity", [], log=log)
    return IdentityClient(url, stop)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_fake_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
