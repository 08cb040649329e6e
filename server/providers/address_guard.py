"""Which network addresses Puente may connect to on a client's behalf (image URLs).

A URL a client sends must not make Puente reach into its own network: loopback, private,
link-local (which holds the clouds' metadata services), carrier-grade NAT, multicast and reserved
ranges are refused, unless the operator allowed a network explicitly. The check runs on the
addresses a host name *resolves to* — inside the connector's resolver, so the connection goes to
exactly the addresses that were checked (no second lookup an attacker's DNS could answer
differently) — and again for every redirect.

Address literals are read the way HTTP clients read them (``127.1``, ``2130706433`` and
``0177.0.0.1`` are all loopback), so no spelling reaches an address the check did not see. IPv6
is permitted only in global unicast (``2000::/3``), and an IPv6 address that carries an IPv4 one
(mapped, 6to4, NAT64) is judged by the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
import re
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


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# The stdlib's ``is_global`` (Python 3.11) calls several of these global; they are not.
_IPV4_REFUSED = _nets(
    "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
    "100.64.0.0/10",  # carrier-grade NAT
    "192.0.0.0/24",  # IETF protocol assignments (192.0.0.8 dummy, DS-Lite, NAT64 discovery)
    "198.18.0.0/15",  # benchmarking
    "240.0.0.0/4",  # reserved, and the broadcast address
)
# Only global unicast (2000::/3) is ever reachable; within it, these are not.
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_IPV6_REFUSED = _nets(
    "2001::/32",  # Teredo: tunnels to an IPv4 host it names obfuscated
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
)
_NAT64 = ipaddress.ip_network(
    "64:ff9b::/96"
)  # well-known prefix: the IPv4 host in its last 32 bits

# Legacy IPv4 spellings that inet_aton (and so some HTTP clients) accept: ``127.1``,
# ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``0``.
_LEGACY_IPV4 = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$")


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` names without a DNS lookup, read as an HTTP client would: IPv6 with or
    without brackets and zone, dotted quads, and the legacy IPv4 forms; None for a host name."""
    bare = host.strip("[]").split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            # Out of range for every client (``256.1.1.1``): not an address, and a resolver
            # would not resolve it either; refuse rather than guess.
            return ipaddress.IPv4Address("0.0.0.0")
    return None


class AddressPolicy:
    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks
        )

    def permits(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed):
            return True
        if address in _METADATA or address.is_multicast or not address.is_global:
            return False
        if isinstance(address, ipaddress.IPv4Address):
            return not any(address in network for network in _IPV4_REFUSED)
        # ::ffff:127.0.0.1, 2002:7f00:1:: (6to4) and 64:ff9b::7f00:1 (NAT64) reach IPv4 hosts:
        # judge those.
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return self.permits(inner)
        return address in _IPV6_GLOBAL_UNICAST and not any(
            address in network for network in _IPV6_REFUSED
        )

    def check(self, host: str, address: str) -> None:
        parsed = literal_address(address)
        if parsed is None or not self.permits(parsed):
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
