"""The `graphql-ws` npm client (what GraphiQL, Apollo and urql use for websockets) with
its default settings, against a live gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, start_server, stop_server, token_for
from tests.e2e.client import create_request
from tests.nodeclients import run_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("ws-clients")
    server = start_server(data_dir, name="ws-clients", LUMI_LOCAL_MODEL_LATENCY_SECONDS="1.5")
    yield server
    stop_server(server)


async def test_graphql_ws_resumes_mid_flight_and_at_the_end(gateway: Server) -> None:
    created = await create_request(gateway, "ws-client", imageCount=2, autoModel=True)
    outcome = run_client(
        "ws_resume.mjs",
        LUMI_WS=gateway.ws,
        LUMI_TOKEN=token_for("ws-client"),
        LUMI_REQUEST=created["id"],
        LUMI_STOP_AFTER="2",
    )
    first, rest, at_end = outcome["first"], outcome["rest"], outcome["atEnd"]
    seqs = [e["seq"] for e in first["events"] + rest["events"]]
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order
    assert (first["completed"], rest["completed"]) == (False, True)
    assert rest["events"][-1]["status"] == "COMPLETED"
    # Resumed after the final event: the subscription completes, with nothing more.
    assert at_end == {"events": [], "completed": True}
