"""Webhook URLs reach public addresses only, when registered and again at each call."""

from __future__ import annotations

import httpx
import pytest

from app.webhooks import signing
from app.webhooks.sender import post
from app.webhooks.ssrf import UrlGuard, UrlRefused
from tests.webhooks.receiver import receiver


def answering(*answers: list[str]) -> object:
    """A resolver that gives each answer in turn (the last one from then on)."""
    queue = list(answers)
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.8.9.10:8080/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://100.64.0.1/", "public"),  # carrier-grade NAT
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
async def test_urls_of_internal_addresses_are_refused(url: str, why: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        await UrlGuard().vet(url)
    assert refused.value.code == "BAD_USER_INPUT"
    assert why in refused.value.message


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await UrlGuard().vet("http://localhost:9/hook")


async def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    guard = UrlGuard(resolver=answering(["93.184.216.34", "10.0.0.5"]))  # type: ignore[arg-type]
    with pytest.raises(UrlRefused, match="private"):
        await guard.vet("https://hooks.example/")


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example/", "file:///etc/passwd", "https://user:pw@hooks.example/", "http://"],
)
async def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    guard = UrlGuard(resolver=answering(["93.184.216.34"]))  # type: ignore[arg-type]
    with pytest.raises(UrlRefused):
        await guard.vet(url)


async def test_plain_http_is_refused_when_only_https_is_allowed() -> None:
    guard = UrlGuard(allow_http=False, resolver=answering(["93.184.216.34"]))  # type: ignore[arg-type]
    with pytest.raises(UrlRefused, match="https"):
        await guard.vet("http://hooks.example/")
    await guard.vet("https://hooks.example/")


async def test_public_addresses_and_allowed_networks_pass() -> None:
    await UrlGuard(resolver=answering(["93.184.216.34"])).vet("https://hooks.example/x")  # type: ignore[arg-type]
    await UrlGuard(allowed_networks=["127.0.0.0/8"]).vet("http://127.0.0.1:8080/x")


async def test_the_call_connects_to_the_address_that_was_checked() -> None:
    """The name is resolved once per call and the connection goes to that address, with
    the name in the Host header: a name the system resolver does not know still works."""
    resolve = answering(["127.0.0.1"])
    guard = UrlGuard(allowed_networks=["127.0.0.0/8"], resolver=resolve)  # type: ignore[arg-type]
    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        url = f"http://hooks.invalid:{port}/hook"
        async with httpx.AsyncClient() as client:
            outcome = await post(
                client, guard, url, b"{}", signing.headers(["whsec_AAAA"], "m", 1, b"{}"), 5
            )
        assert outcome.delivered
        [call] = hook.calls
        assert call.headers["host"] == f"hooks.invalid:{port}"
        assert call.headers["webhook-id"] == "m"


async def test_a_name_that_turns_internal_after_registration_is_not_called() -> None:
    """DNS rebinding: public when registered, loopback when the call is made."""
    resolve = answering(["93.184.216.34"], ["127.0.0.1"])
    guard = UrlGuard(resolver=resolve)  # type: ignore[arg-type]
    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        url = f"http://rebind.invalid:{port}/hook"
        await guard.vet(url)  # registration: public
        async with httpx.AsyncClient() as client:
            outcome = await post(client, guard, url, b"{}", {}, 5)
        assert not outcome.delivered
        assert outcome.error is not None
        assert "loopback" in outcome.error
        assert hook.calls == []
        assert resolve.asked == ["rebind.invalid", "rebind.invalid"]  # type: ignore[attr-defined]


async def test_redirects_are_not_followed() -> None:
    guard = UrlGuard(allowed_networks=["127.0.0.0/8"])
    with receiver() as hook:
        hook.then = 307
        async with httpx.AsyncClient() as client:
            outcome = await post(client, guard, hook.url, b"{}", {}, 5)
        assert not outcome.delivered
        assert outcome.status_code == 307
        assert len(hook.calls) == 1
