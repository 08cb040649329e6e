"""A per-model concurrency cap with a bounded queue.

Up to ``limit`` requests run at once; up to ``queue`` more wait in arrival order, each at most
``queue_timeout`` seconds; anything past that gets 429 with ``Retry-After`` at once instead of
piling up behind a saturated engine (as TGI's router does). A slot is a ``Lease``: released once,
by whoever finishes the request (the gateway for a whole answer, the stream when it closes).
"""

from __future__ import annotations

import asyncio
from collections import deque

from server.errors import RateLimited

# What a refused client is told to wait: slots free up as answers finish, usually within seconds.
RETRY_AFTER = 1.0


class Lease:
    __slots__ = ("_limiter",)

    def __init__(self, limiter: ConcurrencyLimiter | None) -> None:
        self._limiter = limiter

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release()


FREE = Lease(None)
"""The lease of a model without a cap."""


class ConcurrencyLimiter:
    def __init__(
        self, name: str, limit: int | None, queue: int = 0, queue_timeout: float = 30.0
    ) -> None:
        self.name = name
        self.limit = limit
        self.queue = queue
        self.queue_timeout = queue_timeout
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> Lease:
        if self.limit is None:
            return FREE
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return Lease(self)
        if len(self._waiters) >= self.queue:
            raise self._refusal("is answering as many requests as it may")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # a slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._refusal("had no free slot in time") from None
            raise
        return Lease(self)  # the slot came with the wake-up; ``in_use`` already counts it

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot straight over: no one can jump the queue
                return
        self.in_use -= 1

    def _refusal(self, why: str) -> RateLimited:
        return RateLimited(
            f"Model '{self.name}' {why}; retry shortly.",
            retry_after=RETRY_AFTER,
            code="model_overloaded",
        )
