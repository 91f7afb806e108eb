"""Body size, CORS, websocket origins and production defaults, over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import Server, mariadb_admin, mariadb_database, start_server, stop_server

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
    # The content types a browser may send cross-site without a preflight (CSRF).
    mutation = 'mutation { createRequest(input: {prompt: "csrf"}) { id } }'
    simple = {
        "application/x-www-form-urlencoded": f"query={mutation}",
        "text/plain": json.dumps({"query": mutation}),
        "multipart/form-data; boundary=b": (
            '--b\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
            + json.dumps({"query": mutation})
            + "\r\n--b--\r\n"
        ),
    }
    for content_type, body in simple.items():
        refused = httpx.post(strict.graphql, content=body, headers={"Content-Type": content_type})
        assert refused.status_code in (400, 415), (content_type, refused.text)


def test_an_internal_error_shows_no_sql_and_names_the_request_in_the_log(
    tmp_path: Path,
) -> None:
    """A broken database (a table gone) is the unexpected failure a client must not see."""
    with mariadb_database(f"lumi_mask_{os.getpid()}") as url:
        server = start_server(tmp_path, name="mask", log_level="info", LUMI_DATABASE_URL=url)
        try:
            gallery = {"query": "{ publicModels(first: 5) { edges { node { id name } } } }"}
            assert httpx.post(server.graphql, json=gallery).json()["data"]
            with mariadb_admin(url.rsplit("/", 1)[1].split("?")[0]) as admin:
                admin.cursor().execute("DROP TABLE model_interactions, models")
            response = httpx.post(server.graphql, json=gallery, headers={"X-Request-Id": "req-42"})
        finally:
            stop_server(server)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    [error] = response.json()["errors"]
    assert error["message"] == "internal error"
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"] == "req-42"
    for leak in ("models", "SELECT", "Traceback", "pymysql", "sqlalchemy", "1146"):
        assert leak not in response.text
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if '"level"' in line]
    [logged] = [
        line for line in lines if line["level"] == "ERROR" and "internal error" in line["message"]
    ]
    assert logged["request_id"] == "req-42"
    assert error["extensions"]["incidentId"] in logged["message"]
    assert "models" in logged["exception"]  # the cause is in the log, for whoever operates it


def test_an_idle_keep_alive_connection_outlives_five_seconds(strict: Server) -> None:
    """uvicorn closed connections idle for 5 s: a request sent as it closed got no answer
    at all (seen in the soak), and a caller could not tell whether createRequest ran.
    The client (60 s in browsers and load balancers) must be the side that closes."""
    host, port = strict.url.removeprefix("http://").split(":")
    body = b'{"query": "{ __typename }"}'
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b'"Query"}}'):
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(6)  # longer than uvicorn's default of 5 s
