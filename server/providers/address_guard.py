"""Which network addresses Puente may connect to on a client's behalf (image URLs).

A URL a client sends must not make Puente reach into its own network: loopback, private,
link-local (which holds the clouds' metadata services), carrier-grade NAT, multicast and reserved
ranges are refused, unless the operator allowed a network explicitly. The check runs on the
addresses a host name *resolves to* — inside the connector's resolver, so the connection goes to
exactly the addresses that were checked (no second lookup an attacker's DNS could answer
differently) — and again for every redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata endpoints that a ``not is_global`` test alone would not name (all are also non-global
# today; listed so a change in the stdlib's tables cannot open them).
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)


class ForbiddenAddress(OSError):
    """A host resolved to an address Puente will not connect to for a client."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, a non-public address")
        self.host = host
        self.address = address


class AddressPolicy:
    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks
        )

    def permits(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            # ::ffff:127.0.0.1 and 2002:7f00:1:: (6to4) reach IPv4 hosts: judge those.
            inner = address.ipv4_mapped or address.sixtofour
            if inner is not None:
                return self.permits(inner)
        if address in _METADATA:
            return False
        return address.is_global and not address.is_multicast

    def check(self, host: str, address: str) -> None:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise ForbiddenAddress(host, address) from None
        if not self.permits(parsed):
            raise ForbiddenAddress(host, address)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses the host if *any* of its addresses
    is forbidden (a host with one public and one private address is not worth the risk)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()
