"""Kept-alive connections per origin, and how a request is written on one."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter, deque
from collections.abc import Mapping

from server.providers.http1.connection import Connection
from server.providers.http1.errors import ConnectError, ConnectTimeout
from server.providers.http1.origin import Origin, split_url
from server.providers.http1.resolver import Resolver
from server.providers.http1.response import Response

# Bytes of a response's status line and headers together; past it, the answer is refused.
MAX_HEAD = 64 * 1024


class Pool:
    """Kept-alive connections per origin; ``request`` sends on one and returns the answer."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_head: int = MAX_HEAD,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.resolver = resolver if resolver is not None else Resolver()
        """Host names looked up once per TTL, shared by the pool's connections."""
        self.max_head = max_head
        self._ssl = ssl_context
        self._idle: dict[Origin, deque[Connection]] = {}
        self.opened: Counter[Origin] = Counter()
        """Connections made so far, per origin (what tests and a debugger watch)."""
        self._open: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def idle(self, origin: Origin) -> int:
        """Connections to ``origin`` waiting in the pool."""
        return len(self._idle.get(origin, ()))

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float | None = None,
    ) -> Response:
        """Send ``method url`` with ``body`` and return the answer once its head arrived.
        ``read_timeout`` bounds each wait for bytes, ``total_timeout`` (from now) the whole
        answer, body included."""
        origin, target = split_url(url)
        request = _encode(method, target, origin, headers, body)
        loop = self.loop()
        deadline = loop.time() + total_timeout if total_timeout is not None else None
        conn = self._take(origin)
        if conn is None:
            connect = connect_timeout
            if deadline is not None:
                connect = min(connect, deadline - loop.time())
            conn = await self._connect(origin, connect)
        return await conn.send(request, read_timeout, deadline)

    def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closing
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        if self._closed:
            raise ConnectError("the client is closed")
        loop = self.loop()
        conn = Connection(self, origin)
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                await self._reach(loop, conn, origin, tls)
        except TimeoutError:
            conn.close()
            raise ConnectTimeout(f"no connection within {timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"cannot connect: {exc.strerror or exc}") from exc
        self._open.add(conn)
        self.opened[origin] += 1
        return conn

    async def _reach(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        origin: Origin,
        tls: ssl.SSLContext | None,
    ) -> None:
        """Connect ``conn`` to ``origin``: to each of its addresses in turn until one accepts."""
        hostname = origin.host if tls else None
        addresses = await self.resolver.addresses(loop, origin.host, origin.port)
        if addresses is None:  # an IP address
            await loop.create_connection(
                lambda: conn, origin.host, origin.port, ssl=tls, server_hostname=hostname
            )
            return
        refused: OSError | None = None
        for family, address in addresses:
            try:
                await loop.create_connection(
                    lambda: conn,
                    address[0],
                    address[1],
                    family=family,
                    ssl=tls,
                    server_hostname=hostname,
                )
                return
            except ssl.SSLError:
                raise  # the certificate, not the address: another address would say the same
            except OSError as exc:
                refused = exc
        self.resolver.forget(origin.host, origin.port)
        assert refused is not None  # addresses is never empty
        raise refused

    def put(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        loop = self.loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.origin, deque()).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_timeout, self._sweep)

    def forget(self, conn: Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle for ``idle_timeout``; come back when the next one will be."""
        self._sweeper = None
        now = self.loop().time()
        expires = self.idle_timeout
        next_due: float | None = None
        for idle in self._idle.values():
            # Oldest first: each connection is appended when it comes back.
            while idle and now - idle[0].idle_since >= expires:
                idle.popleft().close()
            if idle:
                due = idle[0].idle_since + expires
                next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._sweeper = self.loop().call_at(next_due, self._sweep)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        if self._loop is not None:
            # Lets the transports finish closing before the loop goes on.
            await asyncio.sleep(0)


def _encode(
    method: str, target: str, origin: Origin, headers: Mapping[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\n\r\n")
    return "".join(lines).encode() + body
