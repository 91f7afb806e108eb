"""Body size, CORS, websocket origins and production defaults, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("strict")
    server = start_server(
        data_dir,
        name="strict",
        LUMI_MAX_BODY_BYTES="4096",
        LUMI_CORS_ORIGINS="https://app.example.com",
        LUMI_GRAPHIQL="false",
        LUMI_INTROSPECTION="false",
    )
    yield server
    stop_server(server)


def test_a_large_body_answers_413_announced_or_streamed(strict: Server) -> None:
    big = {"query": "{ me { id } }", "variables": {"pad": "x" * 5000}}
    response = httpx.post(strict.graphql, json=big)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the stream
        yield b'{"query": "{ me { id } }", "variables": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    streamed = httpx.post(
        strict.graphql, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    small = httpx.post(strict.graphql, json={"query": "{ __typename }"})
    assert small.status_code == 200


def test_cors_allows_only_the_listed_origins(strict: Server) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(
        strict.graphql, headers={"Origin": "https://app.example.com", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = httpx.options(strict.graphql, headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


async def test_websocket_handshakes_from_other_origins_are_refused(strict: Server) -> None:
    protocols = ["graphql-transport-ws"]
    with pytest.raises(InvalidStatus):
        async with websockets.connect(
            strict.ws,
            subprotocols=protocols,
            origin="https://evil.example",  # type: ignore[arg-type]
        ):
            pass
    async with websockets.connect(
        strict.ws,
        subprotocols=protocols,
        origin="https://app.example.com",  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "graphql-transport-ws"


def test_graphiql_and_introspection_can_be_turned_off(strict: Server) -> None:
    page = httpx.get(strict.graphql, headers={"Accept": "text/html"})
    assert page.status_code != 200 or "graphiql" not in page.text.lower()
    introspection = httpx.post(strict.graphql, json={"query": "{ __schema { types { name } } }"})
    assert introspection.json().get("errors")


def test_no_mutation_over_get_and_no_simple_form_posts(strict: Server) -> None:
    get = httpx.get(
        strict.graphql, params={"query": 'mutation { createRequest(input: {prompt: "x"}) { id } }'}
    )
    assert get.status_code in (400, 404, 405)
    form = httpx.post(
        strict.graphql,
        content="query={ me { id } }",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code in (400, 415)
