"""GraphiQL in a real browser: headless Chromium opens GET /graphql of a live `lumi
serve`, with every request that would leave the machine blocked, and runs a query and a
whole generation by pressing play in the example tabs (see tests/e2e/browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import Server, start_server, stop_server, token_for
from tests.e2e.browser import Traffic, offline_page, require_chromium, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TABS = ["Create", "Follow", "Details", "Gallery", "Me"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()  # before a server starts for nothing
    server = start_server(tmp_path_factory.mktemp("graphiql"))
    yield server
    stop_server(server)


def run_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.locator(".graphiql-execute-button").click()


def response_text(page: Page) -> str:
    return page.locator(".graphiql-response").inner_text()


def open_graphiql(page: Page, gateway: Server, traffic: Traffic) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.graphql)
    try:
        expect(page.locator(".graphiql-container")).to_be_visible(timeout=20_000)
    except AssertionError:
        screenshot(page, "graphiql-did-not-render")
        raise AssertionError(
            f"GraphiQL did not render: {page.locator('body').inner_text()[:500]!r}; "
            f"blocked off the machine: {traffic.offsite}; errors: {traffic.errors}"
        ) from None
    expect(page.locator(".graphiql-tab-button")).to_have_text(TABS)


def test_graphiql_runs_a_query_and_a_subscription_with_nothing_fetched_off_the_machine(
    gateway: Server,
) -> None:
    from playwright.sync_api import expect

    dev = httpx.post(
        gateway.graphql,
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {token_for('dev')}"},
    ).json()["data"]["me"]["id"]
    with offline_page(gateway.url) as (page, traffic):
        open_graphiql(page, gateway, traffic)
        screenshot(page, "graphiql-opened")
        response = page.locator(".graphiql-response")

        # A query, with the development token the page put in the Headers tab.
        run_tab(page, "Me")
        expect(response).to_contain_text('"displayName"')
        assert f'"id": "{dev}"' in response_text(page)

        # A generation: create it, then follow it over graphql-transport-ws.
        run_tab(page, "Create")
        expect(response).to_contain_text('"createRequest"')
        created = re.search(r'"id": "([^"]+)"', response_text(page))
        assert created is not None, response_text(page)
        run_tab(page, "Follow")
        expect(response).to_contain_text('"status": "COMPLETED"', timeout=30_000)
        screenshot(page, "graphiql-subscription-completed")

    (init,) = traffic.messages("connection_init")
    assert init["payload"]["Authorization"].startswith("Bearer ")
    (subscribe,) = traffic.messages("subscribe")
    assert subscribe["payload"]["variables"] == {"id": created.group(1)}
    events = [m["payload"]["data"]["requestUpdates"] for m in traffic.messages("next")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) >= 5
    assert events[-1]["status"] == "COMPLETED"
    assert traffic.offsite == []
    assert traffic.errors == []
