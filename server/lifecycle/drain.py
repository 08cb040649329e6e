"""Graceful shutdown: on SIGTERM, drain the instance instead of dropping what it is answering.

    SIGTERM ─▶ /ready answers 503 (a load balancer stops sending here)
            ─▶ after ``drain_delay``: the listener closes; idle connections close
            ─▶ requests and streams in flight finish, for up to ``drain_timeout``
            ─▶ then what is still running is cut off cleanly: a stream ends with an SSE error
               event and ``[DONE]``, a whole answer still waited for gets 503
            ─▶ the lifespan closes providers and upstream connections.

uvicorn does the middle (stop accepting, wait for connections); ``DrainingServer`` adds the
first step and the clean cut-off, which uvicorn's own timeout would do by cancelling tasks: an
abrupt close for the client and a traceback in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import uvicorn

from server.errors import ServiceUnavailable

log = logging.getLogger("puente")

# How long uvicorn waits, past the drain timeout, for cut-off requests to finish writing their
# last bytes before it cancels them itself.
CUTOFF_GRACE = 5.0


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The server is shutting down; retry the request.", retry_after=1, code="server_shutdown"
    )


class Drain:
    """The requests the gateway is answering, so that shutdown can cut them off cleanly."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self.draining = False
        """SIGTERM arrived: ``/ready`` answers 503 and no reload starts."""
        self.cutting = False

    def track(self, task: asyncio.Task[Any] | None = None) -> _Tracked:
        """``with drain.track():`` around work on behalf of a client (the current task by
        default); if shutdown cuts it off, it raises ``ServiceUnavailable`` there."""
        return _Tracked(self, task or asyncio.current_task())

    def cut(self) -> int:
        """Cancel everything still tracked; returns how many."""
        self.cutting = True
        for task in self._tasks:
            if not task.done():
                self._cut.add(task)
                task.cancel("drain timeout")
        return len(self._cut)


class _Tracked:
    __slots__ = ("_drain", "_task")

    def __init__(self, drain: Drain, task: asyncio.Task[Any] | None) -> None:
        self._drain = drain
        self._task = task

    def __enter__(self) -> None:
        if self._task is not None:
            self._drain._tasks.add(self._task)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        self._drain._tasks.discard(task)
        if kind is asyncio.CancelledError and task in self._drain._cut:
            self._drain._cut.discard(task)
            task.uncancel()
            raise shutting_down() from None


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_drain: Callable[[], None],
        on_cutoff: Callable[[], int],
        drain_timeout: float,
        drain_delay: float = 0.0,
    ) -> None:
        config.timeout_graceful_shutdown = math.ceil(drain_timeout + CUTOFF_GRACE)
        super().__init__(config)
        self._on_drain = on_drain
        self._on_cutoff = on_cutoff
        self.drain_timeout = drain_timeout
        self.drain_delay = drain_delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only flag setting and thread-safe loop calls belong here.
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own (forced) path
            return
        self._draining = True
        self._on_drain()
        if self.drain_delay <= 0:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
        self._loop.call_soon_threadsafe(
            self._loop.call_later, self.drain_delay, self._stop_accepting
        )

    def _stop_accepting(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.drain_timeout, self._cutoff)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()

    def _cutoff(self) -> None:
        count = self._on_cutoff()
        if count:
            log.warning(
                "drain timeout of %gs reached: cut off %d request(s)", self.drain_timeout, count
            )


def run(app: Any, config: uvicorn.Config, *, drain_timeout: float, drain_delay: float) -> None:
    """``uvicorn.run`` for one worker, draining as above. ``app`` is Puente's FastAPI app, whose
    lifespan puts the runtime on ``app.state``."""

    def on_drain() -> None:
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            runtime.pipeline.drain.draining = True

    def on_cutoff() -> int:
        runtime = getattr(app.state, "runtime", None)
        return runtime.pipeline.drain.cut() if runtime is not None else 0

    server = DrainingServer(
        config,
        on_drain=on_drain,
        on_cutoff=on_cutoff,
        drain_timeout=drain_timeout,
        drain_delay=drain_delay,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the lifespan failed and said why
