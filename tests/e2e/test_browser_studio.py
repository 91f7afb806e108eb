"""The studio in a real browser: headless Chromium opens GET / of a live `lumi serve`
(every request that would leave the machine blocked, see tests/e2e/browser.py), submits
a prompt, watches it through to a drawn 3D model, reloads mid-run and resumes where it
was; and, without autoModel, picks an image, publishes the model and likes it in the
gallery. Screenshots go to var/test-artifacts/browser/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import trimesh

from tests.conftest import Server, start_server, stop_server
from tests.e2e.browser import Traffic, offline_page, require_chromium, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# Slow enough offline providers that a reload lands in the middle of the 3D job.
LATENCY = {"LUMI_LOCAL_LATENCY_SECONDS": "0.8", "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "6"}

# How many colours the viewer's canvas shows: 1 while blank, hundreds once a textured,
# lit mesh is drawn. Read through a 2D canvas, as any page could.
CANVAS_COLOURS = """() => {
  const source = document.getElementById("viewer");
  if (source.offsetParent === null || !source.width) return 0; // not shown
  const copy = document.createElement("canvas");
  copy.width = source.width;
  copy.height = source.height;
  const context = copy.getContext("2d");
  context.drawImage(source, 0, 0);
  const pixels = context.getImageData(0, 0, copy.width, copy.height).data;
  const colours = new Set();
  for (let i = 0; i < pixels.length; i += 4 * 7) {
    colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
  }
  return colours.size;
}"""

LOADED_IMAGES = """() => [...document.querySelectorAll("#images img")]
  .filter((img) => img.complete && img.naturalWidth > 0).length"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()  # before a server starts for nothing
    server = start_server(tmp_path_factory.mktemp("studio"), **LATENCY)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No workers: whatever is submitted waits in line."""
    require_chromium()
    server = start_server(tmp_path_factory.mktemp("held"), LUMI_EMBEDDED_WORKERS="false")
    yield server
    stop_server(server)


def open_studio(page: Page, gateway: Server) -> None:
    from playwright.sync_api import expect

    page.goto(gateway.url + "/")
    # Signed in with the development token the page brings.
    expect(page.locator("#me")).to_contain_text("credits", timeout=20_000)


def submit(page: Page, prompt: str, *, images: int, auto_model: bool) -> None:
    page.fill("#prompt", prompt)
    page.select_option("#image-count", str(images))
    page.set_checked("#auto-model", auto_model)
    page.click("#submit")


def status(page: Page) -> str:
    return str(page.get_attribute("#request-status", "data-status") or "")


def progress(page: Page) -> float:
    return float(page.eval_on_selector("#progress", "element => element.value"))


def follow_events(traffic: Traffic) -> list[dict[str, Any]]:
    """Every requestUpdates event the page received, in order, across its sockets."""
    return [
        m["payload"]["data"]["requestUpdates"]
        for m in traffic.received
        if m.get("type") == "next" and "requestUpdates" in (m["payload"].get("data") or {})
    ]


def follow_subscriptions(traffic: Traffic) -> list[dict[str, Any]]:
    return [
        m["payload"]["variables"]
        for m in traffic.messages("subscribe")
        if "requestUpdates" in m["payload"]["query"]
    ]


def wait_for_model(page: Page) -> None:
    page.wait_for_function(f"() => ({CANVAS_COLOURS})() > 50", timeout=30_000)


def test_a_request_is_followed_live_drawn_in_3d_and_resumed_after_a_reload(
    gateway: Server,
) -> None:
    with offline_page(gateway.url) as (page, traffic):
        open_studio(page, gateway)
        submit(page, "a brass robot toy", images=2, auto_model=True)

        # The progress bar moves while the request runs, never back.
        seen = [progress(page)]
        deadline = time.monotonic() + 30
        while status(page) not in {"MODEL_GENERATING", "COMPLETED", "FAILED"}:
            assert time.monotonic() < deadline, f"stuck at {status(page)}"
            seen.append(progress(page))
            time.sleep(0.05)
        seen.append(progress(page))
        assert seen == sorted(seen)
        assert len(set(seen)) >= 3, seen
        assert status(page) == "MODEL_GENERATING"  # the 3D job takes seconds: mid-run

        # Each image appears once it is made.
        page.wait_for_function(f"() => ({LOADED_IMAGES})() === 2", timeout=10_000)
        screenshot(page, "studio-running")
        before = progress(page)
        seqs_before = [e["seq"] for e in follow_events(traffic)]
        url = page.url
        assert "#request=" in url

        page.reload()
        # The same request, where it was: its images, its progress, then the rest live.
        assert page.url == url
        page.wait_for_function(f"() => ({LOADED_IMAGES})() === 2", timeout=10_000)
        assert progress(page) >= before
        page.wait_for_function(
            "() => document.getElementById('request-status').dataset.status === 'COMPLETED'",
            timeout=30_000,
        )
        assert progress(page) == 100
        wait_for_model(page)
        assert page.locator("#downloads a").count() >= 1
        assert page.get_attribute("#downloads a", "download") == "model.glb"
        screenshot(page, "studio-completed")

    # One subscription per page load; the second resumed after the last event the page
    # had seen (or later: the reloaded page read the request's state first).
    first, second = follow_subscriptions(traffic)
    assert first["afterSeq"] >= 0
    assert second["afterSeq"] >= max(seqs_before) > 0
    seqs = [e["seq"] for e in follow_events(traffic)]
    assert seqs == sorted(set(seqs)), "an event was delivered twice"
    assert follow_events(traffic)[-1]["status"] == "COMPLETED"
    assert traffic.offsite == []
    assert traffic.errors == []


def test_an_image_is_picked_and_the_model_published_and_liked_in_the_gallery(
    gateway: Server,
) -> None:
    from playwright.sync_api import expect

    with offline_page(gateway.url) as (page, traffic):
        open_studio(page, gateway)
        submit(page, "a wooden owl", images=2, auto_model=False)

        pick = page.locator("#images button.pick")
        expect(pick).to_have_count(2, timeout=20_000)
        expect(page.locator("#request-status")).to_have_attribute("data-status", "IMAGE_COMPLETED")
        pick.nth(1).click()
        expect(pick).to_have_count(0)
        expect(page.locator("#images .slot").nth(1)).to_have_class("slot selected")
        expect(page.locator("#request-status")).to_have_attribute(
            "data-status", "COMPLETED", timeout=30_000
        )
        wait_for_model(page)

        # My requests follow along live.
        mine = page.locator("#my-requests li", has_text="a wooden owl")
        expect(mine.locator(".status")).to_have_attribute("data-status", "COMPLETED")

        page.click("#publish")
        card = page.locator("#gallery .card").first
        expect(card).to_contain_text("a wooden owl", timeout=10_000)
        like = card.locator("button.like")
        expect(like).to_have_attribute("aria-pressed", "false")
        like.click()
        like = page.locator("#gallery .card").first.locator("button.like")
        expect(like).to_have_attribute("aria-pressed", "true")
        expect(like).to_contain_text("1")
        favorite = page.locator("#gallery .card").first.locator("button.favorite")
        favorite.click()
        expect(page.locator("#gallery .card").first.locator("button.favorite")).to_have_attribute(
            "aria-pressed", "true"
        )
        screenshot(page, "studio-gallery")

    assert traffic.offsite == []
    assert traffic.errors == []


# The kinds of a request's jobs, asked as the page asks, with its token.
JOB_KINDS = """async (id) => {
  const response = await fetch("graphql", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: "Bearer " + sessionStorage.getItem("lumi-studio-token"),
    },
    body: JSON.stringify({
      query: "query J($id: ID!) { request(id: $id) { jobs { kind } } }",
      variables: { id: decodeURIComponent(id) },
    }),
  });
  return (await response.json()).data.request.jobs.map((job) => job.kind);
}"""


def test_a_model_is_made_from_an_image_of_the_users_own(gateway: Server) -> None:
    from playwright.sync_api import expect

    from providers.local import render_png

    picture = render_png("a lighthouse", 3, 320, 240)
    with offline_page(gateway.url) as (page, traffic):
        open_studio(page, gateway)
        page.set_input_files(
            "#source-image",
            files=[{"name": "lighthouse.png", "mimeType": "image/png", "buffer": picture}],
        )
        expect(page.locator("#image-count")).to_be_disabled()  # the upload is the one image
        page.click("#submit")  # no prompt: the file's name names the model

        expect(page.locator("#request-status")).to_have_attribute(
            "data-status", "COMPLETED", timeout=30_000
        )
        wait_for_model(page)
        # The one image is the user's own, as they sent it.
        page.wait_for_function(f"() => ({LOADED_IMAGES})() === 1", timeout=10_000)
        shown = page.eval_on_selector("#images img", "img => [img.naturalWidth, img.naturalHeight]")
        assert shown == [320, 240]
        expect(page.locator("#request-prompt")).to_contain_text("lighthouse")
        expect(page.locator("#source-image")).to_have_value("")  # used up
        screenshot(page, "studio-own-image")
        # Straight to 3D: no prompt written, no image made.
        jobs = page.evaluate(JOB_KINDS, page.url.split("#request=")[1])
        assert jobs == ["MODEL"]

        # For 3D printing: the model as STL, converted on the way and listed from then on.
        with page.expect_download() as download:
            page.click("#downloads button.as-format:text-is('STL')")
        assert download.value.suggested_filename == "lighthouse.stl"  # named as the model
        stl = trimesh.load(download.value.path(), file_type="stl", force="mesh")
        assert len(stl.faces) > 100
        expect(page.locator("#downloads a", has_text="model.stl")).to_have_count(1)

    assert follow_events(traffic)[-1]["status"] == "COMPLETED"
    assert traffic.offsite == []
    assert traffic.errors == []


def test_a_waiting_request_shows_its_place_in_line(held: Server) -> None:
    from playwright.sync_api import expect

    with offline_page(held.url) as (page, traffic):
        open_studio(page, held)
        submit(page, "the first in line", images=1, auto_model=True)
        expect(page.locator("#request-prompt")).to_have_text("the first in line")
        expect(page.locator("#queue")).to_have_attribute("data-position", "0", timeout=10_000)
        expect(page.locator("#queue")).to_contain_text("Next in line")
        first = page.url

        submit(page, "the second in line", images=1, auto_model=True)
        expect(page.locator("#request-prompt")).to_have_text("the second in line")
        expect(page.locator("#queue")).to_have_attribute("data-position", "1", timeout=10_000)
        expect(page.locator("#queue")).to_contain_text("1 ahead in line")
        screenshot(page, "studio-queue")

        page.goto(first)  # only the fragment changes: the page reloads to follow it
        page.reload()
        expect(page.locator("#request-prompt")).to_have_text("the first in line")
        expect(page.locator("#queue")).to_have_attribute("data-position", "0", timeout=10_000)

    asked = [m["payload"]["query"] for m in traffic.messages("subscribe")]
    assert sum("requestQueue" in query for query in asked) == 3
    assert traffic.offsite == []
    assert traffic.errors == []
