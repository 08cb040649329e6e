"""An aiohttp server on 127.0.0.1 in a thread of its own, the base of every fake upstream.

Its own thread and event loop keep the fake's pacing independent of the test's loop, and let
sync tests drive it. Subclasses add their routes in ``routes``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web


class ThreadedServer:
    name = "fake"
    client_max_size = 64 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"fake {self.name} did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        assert server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def open_connections(self) -> int:
        """TCP connections from clients that the fake still holds open."""
        assert self._runner is not None
        assert self._loop is not None
        server = self._runner.server
        assert server is not None

        async def count() -> int:
            return len(server.connections)

        return asyncio.run_coroutine_threadsafe(count(), self._loop).result(5)
