"""The outbound fence: URLs that requests supply never reach internal addresses.

A data URL names a host; the host resolves to addresses. When any of them is
loopback, private, link-local, multicast, unspecified or otherwise not
globally routable, the URL is refused unless the platform allows that
address explicitly (``fetch_allow``: networks, or ``host:port`` endpoints).
The broker checks at offer time; the worker checks again at fetch time and
connects only to the addresses it checked (:class:`FencedResolver`), so a
name that resolves differently the second time (DNS rebinding) gains nothing.

The service URLs a site configures (Skaha, Harbor, SRCNet) are trusted and
never pass through here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

if TYPE_CHECKING:
    from talicada.settings import PlatformSettings, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Default ports of the schemes whose URLs are fenced.
DEFAULT_PORTS = {"http": 80, "https": 443}


class FenceRefused(OSError):
    """A URL's host is (or resolves to) an address the platform does not fetch from.

    An OSError so that aiohttp's connector reports it as a connection error
    without ever opening a socket.
    """


def category(address: IPAddress) -> str | None:
    """What kind of internal address ``address`` is; None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return category(address.ipv4_mapped)
    for name, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
    ):
        if flag:
            return name
    return None if address.is_global else "reserved"


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (an IPv6 zone is dropped), or None for a host name."""
    try:
        return ipaddress.ip_address(text.partition("%")[0].strip("[]"))
    except ValueError:
        return None


def split_endpoint(entry: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6) as a lower-case host and a port, or None."""
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]").lower()
    return (host, int(port)) if host else None


@dataclass(frozen=True)
class Fence:
    """Which internal addresses one platform may fetch from anyway.

    ``networks``: allowed internal networks (any port); ``endpoints``: allowed
    ``(host, port)`` pairs, where host is a name or an address as written in
    the URL or an address it resolves to; ``loopback``: all loopback addresses
    allowed (embedded mode on one person's own machine).
    """

    networks: tuple[IPNetwork, ...] = ()
    endpoints: frozenset[tuple[str, int]] = frozenset()
    loopback: bool = False

    @classmethod
    def of(cls, entries: Iterable[str], *, loopback: bool = False) -> Fence:
        """A fence from ``fetch_allow`` entries; ValueError naming a malformed one."""
        networks: list[IPNetwork] = []
        endpoints: set[tuple[str, int]] = set()
        for entry in entries:
            endpoint = split_endpoint(entry) if "/" not in entry else None
            if endpoint is not None:
                endpoints.add(endpoint)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is neither a network (10.0.0.0/8) nor host:port"
                ) from None
        return cls(tuple(networks), frozenset(endpoints), loopback)

    def refusal(self, host: str, port: int, address: str) -> str | None:
        """Why ``host:port`` may not be fetched at ``address`` (None: it may)."""
        ip = parse_address(address)
        if ip is None:
            return f"{host} resolves to {address!r}, which is not an address"
        kind = category(ip)
        if kind is None:
            return None
        host = host.lower().strip("[]")
        if (host, port) in self.endpoints or (str(ip), port) in self.endpoints:
            return None
        if any(ip.version == net.version and ip in net for net in self.networks):
            return None
        if self.loopback and kind == "loopback":
            return None
        where = "is" if parse_address(host) is not None else f"resolves to {ip}, which is"
        return f"{host} {where} a {kind} address, and the platform does not fetch from those"

    def check_addresses(self, host: str, port: int, addresses: Iterable[str]) -> None:
        """Raise FenceRefused when any of ``addresses`` is refused."""
        for address in addresses:
            reason = self.refusal(host, port, address)
            if reason is not None:
                raise FenceRefused(reason)


def url_endpoint(url: str) -> tuple[str, int] | None:
    """The host and port an ``http(s)`` URL connects to; None for other schemes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return parts.hostname.lower(), port


@dataclass
class OfferTimeResolver:
    """Resolves data hosts for the broker's offer-time check, bounded and cached.

    A host that does not resolve in ``timeout`` seconds is not refused here
    (the worker checks again when it fetches); answers are kept ``ttl`` seconds
    so a burst of requests for one host costs one look-up.
    """

    timeout: float = 2.0
    ttl: float = 30.0
    _cache: dict[tuple[str, int], tuple[float, list[str]]] = field(default_factory=dict)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` (itself when it is an address; [] when unknown)."""
        if parse_address(host) is not None:
            return [host]
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.timeout
            )
            found = sorted({str(info[4][0]) for info in infos})
        except (OSError, TimeoutError, UnicodeError):
            found = []
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[(host, port)] = (now + self.ttl, found)
        return found

    async def refusal(self, fence: Fence, url: str) -> str | None:
        """Why the fence refuses ``url`` now (None: not refused)."""
        endpoint = url_endpoint(url)
        if endpoint is None:
            return None
        host, port = endpoint
        for address in await self.addresses(host, port):
            reason = fence.refusal(host, port, address)
            if reason is not None:
                return reason
        return None


class FencedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to fenced addresses.

    aiohttp connects to exactly the addresses the resolver returns, so the
    check and the connection see the same answer. Address literals never
    reach a resolver; :func:`check_url` covers those before each request.
    """

    def __init__(self, fence: Fence, inner: AbstractResolver | None = None) -> None:
        self.fence = fence
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        self.fence.check_addresses(host, port, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self.inner.close()


def check_url(fence: Fence, url: str) -> None:
    """Raise FenceRefused when ``url``'s host is a fenced address literal."""
    endpoint = url_endpoint(url)
    if endpoint is None:
        return
    host, port = endpoint
    if parse_address(host) is not None:
        fence.check_addresses(host, port, [host])


def describe(fence: Fence) -> dict[str, Any]:
    """The fence for a start-up log line."""
    return {
        "loopback": fence.loopback,
        "networks": [str(net) for net in fence.networks],
        "endpoints": [f"{host}:{port}" for host, port in sorted(fence.endpoints)],
    }


def platform_fence(settings: Settings, platform: PlatformSettings) -> Fence:
    """The fence of ``platform``: its ``fetch_allow``, and loopback when the site allows it."""
    return Fence.of(platform.fetch_allow, loopback=settings.loopback_fetch)


def listed(entries: Iterable[str], url: str) -> bool:
    """Whether ``url``'s host and port are among ``data_hosts`` entries.

    An entry is ``host:port``, or ``host`` alone for the scheme's default port.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return False
    for entry in entries:
        endpoint = split_endpoint(entry)
        if endpoint is None:
            endpoint = (entry.strip("[]").lower(), DEFAULT_PORTS.get(parts.scheme.lower(), -1))
        if endpoint == (host, port):
            return True
    return False
