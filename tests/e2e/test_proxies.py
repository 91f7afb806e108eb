"""Whose `X-Forwarded-For` a real `lumi serve` believes: only LUMI_TRUSTED_PROXIES
decides, never uvicorn's FORWARDED_ALLOW_IPS or its 127.0.0.1 default. Seen through the
per-address rate limit: one budget of two operations per client address it believes.

A "proxy" here is a client bound to 127.0.0.2 (Linux routes all of 127/8 to loopback),
so the trusted peer is one uvicorn would not trust by itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, Server, start_server, stop_server

pytestmark = pytest.mark.e2e

GALLERY = {"query": "{ publicModels(first: 1) { edges { node { id } } } }"}
# Two operations at once per address, then one a minute: no refill during a test.
TWO_PER_ADDRESS = {
    "LUMI_RATE_LIMIT_USER_PER_MINUTE": "0",
    "LUMI_RATE_LIMIT_IP_PER_MINUTE": "1",
    "LUMI_RATE_LIMIT_BURST": "2",
}
PROXY, DIRECT = "127.0.0.2", "127.0.0.1"


def require_second_loopback_address() -> None:
    try:
        with socket.socket() as sock:
            sock.bind((PROXY, 0))
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"cannot bind {PROXY}: {exc}")
        pytest.skip(f"SKIPPED, NOT TESTED: cannot bind {PROXY} ({exc})")


def refusal(server: Server, forwarded_for: str, *, peer: str) -> str | None:
    """The error code of one operation sent from `peer` with that X-Forwarded-For."""
    transport = httpx.HTTPTransport(local_address=peer)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.post(
            server.graphql, json=GALLERY, headers={"X-Forwarded-For": forwarded_for}
        )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    errors = result.get("errors") or [{}]
    extensions = errors[0].get("extensions", {})
    code: str | None = extensions.get("code")
    if code == "RATE_LIMITED":
        assert extensions["scope"] == "address"
    return code


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Trusts the network of 127.0.0.2; uvicorn's own variable would trust 127.0.0.1."""
    require_second_loopback_address()
    server = start_server(
        tmp_path_factory.mktemp("proxied"),
        LUMI_TRUSTED_PROXIES="192.0.2.0/24, 127.0.0.2/31",
        FORWARDED_ALLOW_IPS=DIRECT,
        **TWO_PER_ADDRESS,
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default, no proxy trusted; uvicorn's own variable would trust every peer."""
    server = start_server(
        tmp_path_factory.mktemp("bare"), FORWARDED_ALLOW_IPS="*", **TWO_PER_ADDRESS
    )
    yield server
    stop_server(server)


def test_by_default_a_local_peer_cannot_forge_its_address(bare: Server) -> None:
    forged = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    codes = [refusal(bare, address, peer=DIRECT) for address in forged]
    assert codes == [None, None, "RATE_LIMITED"]  # all spent 127.0.0.1's budget, despite '*'


def test_a_trusted_proxy_gives_each_forwarded_client_its_own_budget(
    behind_proxy: Server,
) -> None:
    clients = ["203.0.113.11", "203.0.113.12", "203.0.113.13"]
    codes = [refusal(behind_proxy, client, peer=PROXY) for client in clients * 2]
    assert codes == [None] * 6
    assert refusal(behind_proxy, clients[0], peer=PROXY) == "RATE_LIMITED"


def test_a_peer_outside_the_trusted_proxies_cannot_forge_its_address(
    behind_proxy: Server,
) -> None:
    forged = ["203.0.113.21", "203.0.113.22", "203.0.113.23"]
    codes = [refusal(behind_proxy, address, peer=DIRECT) for address in forged]
    assert codes == [None, None, "RATE_LIMITED"]  # FORWARDED_ALLOW_IPS named it in vain


def test_a_client_cannot_forge_past_the_address_its_proxy_appended(
    behind_proxy: Server,
) -> None:
    """The proxy appends the peer it saw; whatever the client wrote before that is not
    believed, since the rightmost address that is not a trusted proxy is the client."""
    chains = [f"{forged}, 198.51.100.1" for forged in ("10.1.1.1", "10.1.1.2", "10.1.1.3")]
    codes = [refusal(behind_proxy, chain, peer=PROXY) for chain in chains]
    assert codes == [None, None, "RATE_LIMITED"]
    assert refusal(behind_proxy, "10.1.1.1, 198.51.100.2", peer=PROXY) is None
