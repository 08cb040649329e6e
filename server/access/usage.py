"""Usage rows, written off the request path: a request's end only appends to a list; a
background task writes the list in batches, and shutdown writes what is left.

A failed write keeps the rows for the next try (up to ``max_pending``; past that the oldest are
dropped and counted, so a database outage cannot grow memory without end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.access.metrics import AccessMetrics
from server.access.storage import StorageError, Store, UsageRow

log = logging.getLogger("puente.access")


class UsageRecorder:
    def __init__(
        self,
        store: Store,
        metrics: AccessMetrics,
        *,
        batch_size: int = 500,
        interval: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._batch_size = batch_size
        self._interval = interval
        self._max_pending = max_pending
        self._rows: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def add(self, row: UsageRow) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="puente-usage-writer")

    async def _run(self) -> None:
        # Stopped by ``aclose`` with a flag, not a cancellation: a cancelled write loses the
        # rows it took (or leaves them to land after shutdown), and ``asyncio.wait_for`` (3.11)
        # swallowed a cancellation that came just as rows woke it, so the writer never ended.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; False (rows kept) when the database failed."""
        async with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return True
            try:
                await self._store.add_usage(rows)
            except StorageError as exc:
                self._keep(rows)
                log.warning("usage: %d rows not written yet: %s", len(rows), exc)
                return False
            self._metrics.usage_written.inc(len(rows))
            return True

    def _keep(self, rows: list[UsageRow]) -> None:
        self._rows[:0] = rows
        excess = len(self._rows) - self._max_pending
        if excess > 0:
            del self._rows[:excess]
            self._metrics.usage_dropped.inc(excess)
            log.error("usage: dropped the %d oldest unwritten rows", excess)

    async def aclose(self, attempts: int = 5) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            # The writer ends after the write it may be doing; the caller's own cancellation
            # still cancels this wait (``asyncio.wait`` does not take it for the writer's).
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()  # a bug in the writer surfaces here
        for attempt in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        log.error("usage: %d rows lost at shutdown: the database kept failing", len(self._rows))
