"""Least-in-flight choice among a model's endpoints, with unhealthy ones taken out.

An endpoint that refuses a connection is marked down at once and skipped; the provider's
prober brings it back when its health check answers again. An endpoint that answers but keeps
failing (5xx, 429, timeouts, resets) opens its circuit breaker and is skipped for a cooldown,
then gets one probe request (``server/resilience/breaker.py``). When no endpoint is left the
least-loaded one is tried anyway, so a recovered upstream is found by the next request too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.resilience.breaker import BreakerState, CircuitBreaker


@dataclass(slots=True)
class Endpoint:
    url: str
    in_flight: int = 0
    healthy: bool = True
    last_error: str = ""
    down_since: float | None = None
    served: int = field(default=0)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def mark_down(self, reason: str) -> None:
        if self.healthy:
            self.down_since = time.monotonic()
        self.healthy = False
        self.last_error = reason

    def mark_up(self) -> None:
        self.healthy = True
        self.last_error = ""
        self.down_since = None

    def describe(self) -> str:
        """``ready``, why it is down, or how long it still cools down (for ``/ready``)."""
        if not self.healthy:
            return self.last_error
        if self.breaker.state is BreakerState.OPEN:
            left = self.breaker.retry_after()
            return f"cooling down for {left:.0f}s after: {self.breaker.last_error}"
        return "ready"


class Balancer:
    def __init__(
        self, urls: list[str], breaker: Callable[[], CircuitBreaker] = CircuitBreaker
    ) -> None:
        if not urls:
            raise ValueError("a balancer needs at least one endpoint")
        self.endpoints = [Endpoint(url, breaker=breaker()) for url in urls]
        self._ticket = itertools.count()

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> Endpoint | None:
        """The usable endpoint with the fewest requests in flight (ties rotate)."""
        candidates = [e for e in self.endpoints if e.url not in exclude]
        if not candidates:
            return None
        usable = [e for e in candidates if e.healthy and e.breaker.available()]
        pool = usable or [e for e in candidates if e.healthy] or candidates
        if len(pool) == 1:
            chosen = pool[0]
        else:
            least = min(e.in_flight for e in pool)
            tied = [e for e in pool if e.in_flight == least]
            chosen = tied[next(self._ticket) % len(tied)]
        if usable:
            chosen.breaker.allow()  # claims the probe when its breaker is half-open
        return chosen

    def done(self, endpoint: Endpoint) -> None:
        """A request its caller counted in ``endpoint.in_flight`` is over."""
        endpoint.in_flight -= 1
        endpoint.served += 1

    @property
    def any_healthy(self) -> bool:
        return any(e.healthy for e in self.endpoints)
