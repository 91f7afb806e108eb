"""Which URLs a webhook may call: public addresses only, unless an operator allows more.

A URL is checked when it is registered (BAD_USER_INPUT, nothing stored) and again for
every call, on the addresses its host resolves to right then; the call then connects to
the very address checked (sender.py), so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot reach an internal service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.config import Settings
from app.errors import BadUserInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port → the addresses it resolves to now
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2000


class UrlRefused(BadUserInput):
    """A webhook URL we will not call; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook URL refused: {reason}", field="url")
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # without brackets
    port: int
    url: str


def _embedded_v4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped ::ffff:a.b.c.d, 6to4), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            return inner
    return ip


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is no public address, or None when it is one."""
    ip = _embedded_v4(ip)
    checks = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (cloud metadata lives there)"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not a public address"),
    ]
    for refused, why in checks:
        if refused:
            return f"{ip} is {why}"
    return None


class UrlGuard:
    def __init__(
        self,
        *,
        allowed_networks: Sequence[str] = (),
        allow_http: bool = True,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allowed: list[IPNetwork] = [ipaddress.ip_network(n) for n in allowed_networks]
        self.allow_http = allow_http
        self.resolver = resolver

    def parse(self, url: str) -> Target:
        """The URL's parts; BAD_USER_INPUT for anything but a plain http(s) URL."""
        if len(url) > MAX_URL_LENGTH:
            raise UrlRefused(f"longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(f"not a URL ({exc})") from None
        schemes = {"https", "http"} if self.allow_http else {"https"}
        if parts.scheme not in schemes:
            raise UrlRefused("the scheme must be " + " or ".join(sorted(schemes)))
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("credentials in the URL are not accepted")
        if not parts.hostname:
            raise UrlRefused("no host")
        default = 443 if parts.scheme == "https" else 80
        return Target(parts.scheme, parts.hostname, port or default, url)

    def _check(self, ip: IPAddress) -> str | None:
        if any(ip in network for network in self.allowed):
            return None
        inner = _embedded_v4(ip)
        if inner is not ip and any(inner in network for network in self.allowed):
            return None
        return refusal(ip)

    async def addresses(self, target: Target) -> list[str]:
        """The addresses `target`'s host resolves to now, every one allowed; UrlRefused
        when any is not (a name with one internal address among public ones is refused)."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = await self.resolver(target.host, target.port)
            except OSError as exc:
                raise UrlRefused(f"{target.host} does not resolve ({exc})") from None
        if not found:
            raise UrlRefused(f"{target.host} does not resolve")
        for address in found:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if (why := self._check(ip)) is not None:
                raise UrlRefused(why)
        return found

    async def vet(self, url: str) -> Target:
        target = self.parse(url)
        await self.addresses(target)
        return target


def guard_for(settings: Settings) -> UrlGuard:
    networks = [n.strip() for n in settings.webhook_allowed_networks.split(",") if n.strip()]
    return UrlGuard(allowed_networks=networks, allow_http=settings.webhook_http_allowed)
