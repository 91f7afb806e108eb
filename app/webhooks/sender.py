"""One webhook call: to the address that was just checked, never to a fresh DNS answer.

The URL's host is replaced by the vetted IP address; the `Host` header and (https) the
TLS server name and certificate check keep the original name, so virtual hosts and
certificates work as if the name had been connected to. Redirects are not followed:
a 3xx is a failed attempt (a redirect could point anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from app.webhooks.ssrf import Target, UrlGuard, UrlRefused

USER_AGENT = "Lumi-Gateway-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def _pinned(target: Target, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL with the vetted address for host, the Host header, and the extensions."""
    url = httpx.URL(target.url)
    default = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default else f"{target.host}:{target.port}"
    if ":" in target.host:  # an IPv6 literal
        host_header = f"[{target.host}]" + ("" if target.port == default else f":{target.port}")
    pinned = url.copy_with(host=address)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


async def post(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> Outcome:
    """POSTs `body`; 2xx is delivered, anything else (refusal included) a failure."""
    try:
        target = guard.parse(url)
        address = (await guard.addresses(target))[0]
    except UrlRefused as refused:
        return Outcome(False, error=refused.message)
    pinned, host, extensions = _pinned(target, address)
    sent = {
        **headers,
        **host,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    try:
        # Streamed and never read: only the status counts, and a receiver's body, however
        # large, is not ours to hold.
        async with client.stream(
            "POST",
            pinned,
            content=body,
            headers=sent,
            extensions=extensions,
            timeout=timeout,
            follow_redirects=False,
        ) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return Outcome(False, error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= status < 300:
        return Outcome(True, status_code=status)
    return Outcome(False, status_code=status, error=f"HTTP {status}")
