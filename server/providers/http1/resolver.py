"""Host names looked up once per ``ttl`` seconds, not once per new connection.

A pool opens a new connection whenever every kept-alive one is busy: a burst of requests to a
cloud vendor opens dozens at once, and each would ask the system's resolver for the same name (a
thread hop and, without a local cache, a round trip to a DNS server). Here one lookup serves
every connection to that name and port for ``ttl`` seconds (300, as aiohttp's cache), the
connections that wait for it included; a failed lookup is not kept, and an address that refuses a
connection makes the next connection look the name up again. An IP address is never looked up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

Address = tuple[int, Any]
"""An address family and a socket address, as ``getaddrinfo`` gives them."""

TTL = 300.0


class Resolver:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self.lookups = 0
        """Lookups asked of the system so far (what tests watch)."""
        self._known: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}

    async def addresses(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> list[Address] | None:
        """Where ``host`` is, in the order to try; None for an IP address (connect to it as
        it is). ``OSError`` (``socket.gaierror``) when the name does not resolve."""
        if _is_address(host):
            return None
        key = (host, port)
        known = self._known.get(key)
        if known is not None and loop.time() - known[0] < self.ttl:
            return known[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = loop.create_task(self._lookup(loop, host, port))
            pending.add_done_callback(_retrieve)  # seen even when every waiter gave up
        # Shielded: a caller that gives up (its client left, its timeout) leaves the lookup to
        # the others waiting for it.
        return await asyncio.shield(pending)

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Address]:
        key = (host, port)
        try:
            self.lookups += 1
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses: list[Address] = [(family, address) for family, _, _, _, address in found]
            if not addresses:  # never seen, but a name with no address must not be cached
                raise socket.gaierror(socket.EAI_NONAME, "no address")
            self._known[key] = (loop.time(), addresses)
            return addresses
        finally:
            del self._pending[key]

    def forget(self, host: str, port: int) -> None:
        """An address of ``host`` refused a connection: look it up again next time."""
        self._known.pop((host, port), None)


def _retrieve(task: asyncio.Task[list[Address]]) -> None:
    if not task.cancelled():
        task.exception()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
