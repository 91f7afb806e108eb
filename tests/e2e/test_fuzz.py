"""Bounded fuzzing of the real gateway: generated operations never break it.

hypothesis-graphql writes operations from schema.graphql: valid queries, valid
mutations, and operations with one schema violation each. Every one goes over HTTP to
`lumi serve` (embedded defaults, SQLite), as a signed-in user, a second user, an
anonymous caller or a caller with a forged token. Whatever comes in, the gateway must
answer with a status below 500 and a JSON body whose errors each carry a code, none
of them INTERNAL, none showing a traceback, SQL or a file path.

ID arguments are a mix of real ids made in setup (a request, its image and its model,
for both users) and junk, so resolvers run on found, foreign and malformed ids alike.
Hypothesis is derandomized and has no example database: every run sends the same
operations.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis_graphql import nodes
from hypothesis_graphql import strategies as gql_st

from tests.conftest import Server, start_server, stop_server, token_for

pytestmark = pytest.mark.e2e

# Hypothesis caches to ./.hypothesis even without an example database, already while
# collecting. In the checkout that directory breaks every later pytest run (the
# project's norecursedirs replaces the defaults and its warnings are errors), so its
# caches go to the temporary directory: this runs on import, before collection ends.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "lumi-tests-hypothesis")

SDL = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()
OWNER, STRANGER = "fuzz-owner", "fuzz-stranger"
MIN_OPERATIONS = 300
LEAKS = ("Traceback", "sqlalchemy", "SELECT ", 'File "')

# Filled by the `world` fixture before the first example is drawn.
REAL_IDS: list[str] = []
JUNK_IDS = st.one_of(
    st.text(max_size=40),
    st.uuids().map(lambda u: u.hex),
    st.sampled_from(["", " ", "0", "-1", "null", "' OR '1'='1", "../../etc/passwd", "x" * 3000]),
)
IDS = st.one_of(  # half real, half junk: strings and integers (ID takes both)
    st.deferred(lambda: st.sampled_from(REAL_IDS)).map(nodes.String),
    st.one_of(
        JUNK_IDS.map(nodes.String),
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    ),
)
# DateTime is output only. An Upload is a file part of a multipart request (the GraphQL
# multipart request specification): a JSON body can only leave it null.
SCALARS = {"ID": IDS, "Upload": st.just(nodes.Null)}
# Mostly the owner of the real ids, so resolvers run past authentication.
CALLERS = st.sampled_from(["owner", "owner", "owner", "stranger", "anonymous", "forged"])

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class World:
    server: Server
    client: httpx.Client
    sent: dict[str, int] = field(default_factory=dict)

    def post(self, query: str, caller: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {}
        if caller in ("owner", "stranger"):
            user = OWNER if caller == "owner" else STRANGER
            headers["Authorization"] = f"Bearer {token_for(user)}"
        elif caller == "forged":
            headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged"
        body = {"query": query, "variables": variables or {}}
        return self.client.post(self.server.graphql, json=body, headers=headers)

    def data(self, query: str, caller: str, variables: dict[str, Any] | None = None) -> Any:
        response = self.post(query, caller, variables)
        body = response.json()
        assert response.status_code == 200, response.text
        assert "errors" not in body, body
        return body["data"]


CREATE = """mutation C($input: CreateRequestInput!) { createRequest(input: $input) { id } }"""
STATUS = """query R($id: ID!) { request(id: $id) { status images { id } model { id } } }"""
PUBLISH = "mutation P($id: ID!) { publishModel(id: $id) { id } }"


def finished_request(world: World, caller: str, prompt: str) -> dict[str, Any]:
    """A request of `caller`'s, run to COMPLETED by the embedded worker."""
    variables = {"input": {"prompt": prompt, "imageCount": 1, "autoModel": True}}
    request_id = world.data(CREATE, caller, variables)["createRequest"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        request = world.data(STATUS, caller, {"id": request_id})["request"]
        if request["status"] == "COMPLETED":
            return {"id": request_id, **request}
        assert request["status"] not in ("FAILED", "CANCELLED"), request
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} did not complete: {request}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        name="fuzz",
        LUMI_RATE_LIMIT_USER_PER_MINUTE="0",
        LUMI_RATE_LIMIT_IP_PER_MINUTE="0",
        LUMI_LOCAL_LATENCY_SECONDS="0",
        LUMI_LOCAL_MODEL_LATENCY_SECONDS="0",
    )
    try:
        with httpx.Client(timeout=30) as client:
            world = World(server, client)
            mine = finished_request(world, "owner", "a fuzzed teapot")
            theirs = finished_request(world, "stranger", "a stranger's kettle")
            world.data(PUBLISH, "owner", {"id": mine["model"]["id"]})  # theirs stays private
            for request in (mine, theirs):
                REAL_IDS.extend([request["id"], request["images"][0]["id"]])
                REAL_IDS.append(request["model"]["id"])
            yield world
    finally:
        stop_server(server)


def send(world: World, kind: str, query: str, caller: str) -> None:
    """Sends one operation and checks the answer is a clean, coded GraphQL response."""
    response = world.post(query, caller)
    world.sent[kind] = world.sent.get(kind, 0) + 1
    where = f"{caller} sent:\n{query}\nstatus {response.status_code}: {response.text[:3000]}"
    assert response.status_code < 500, where
    try:
        body = response.json()
    except json.JSONDecodeError:
        pytest.fail(f"the body is not JSON; {where}")
    assert isinstance(body, dict), where
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code, f"an error without a code; {where}"
        assert code != "INTERNAL", f"INTERNAL error; {where}"
        message = str(error.get("message", ""))
        # A leak is what the server wrote, not the client's own text echoed back.
        leaked = [s for s in LEAKS if s.lower() in message.lower() and s not in query]
        assert not leaked, f"the message shows {leaked}; {where}"


@FUZZ
@given(query=gql_st.queries(SDL, custom_scalars=SCALARS), caller=CALLERS)
def test_generated_queries_get_clean_answers(world: World, query: str, caller: str) -> None:
    send(world, "queries", query, caller)


@FUZZ
@given(query=gql_st.mutations(SDL, custom_scalars=SCALARS), caller=CALLERS)
def test_generated_mutations_get_clean_answers(world: World, query: str, caller: str) -> None:
    send(world, "mutations", query, caller)


@settings(FUZZ, max_examples=100)
@given(
    query=st.one_of(
        gql_st.queries(SDL, custom_scalars=SCALARS, mode=gql_st.Mode.NEGATIVE),
        gql_st.mutations(SDL, custom_scalars=SCALARS, mode=gql_st.Mode.NEGATIVE),
    ),
    caller=CALLERS,
)
def test_operations_breaking_the_schema_get_clean_answers(
    world: World, query: str, caller: str
) -> None:
    send(world, "invalid", query, caller)


def test_the_fuzz_sent_300_operations_and_the_server_logged_no_traceback(world: World) -> None:
    """Run with the whole module: the tests above count what they sent."""
    log = world.server.log.read_text()
    assert "Traceback" not in log, f"the server logged a traceback:\n{log[-5000:]}"
    total = sum(world.sent.values())
    assert world.sent.get("queries", 0) > 0, world.sent
    assert world.sent.get("mutations", 0) > 0, world.sent
    assert total >= MIN_OPERATIONS, f"only {total} operations were sent: {world.sent}"
    print(f"\nfuzz: sent {total} operations {world.sent}")
