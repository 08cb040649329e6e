"""Least-in-flight choice among a model's endpoints, with unhealthy ones taken out.

An endpoint that refuses a connection is marked down at once and skipped; the provider's
prober brings it back when its health check answers again. When every endpoint is down the
least-loaded one is tried anyway, so a recovered upstream is found by the next request too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class Endpoint:
    url: str
    in_flight: int = 0
    healthy: bool = True
    last_error: str = ""
    down_since: float | None = None
    served: int = field(default=0)

    def mark_down(self, reason: str) -> None:
        if self.healthy:
            self.down_since = time.monotonic()
        self.healthy = False
        self.last_error = reason

    def mark_up(self) -> None:
        self.healthy = True
        self.last_error = ""
        self.down_since = None


class Balancer:
    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("a balancer needs at least one endpoint")
        self.endpoints = [Endpoint(url) for url in urls]
        self._ticket = itertools.count()

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> Endpoint | None:
        """The healthy endpoint with the fewest requests in flight (ties rotate)."""
        candidates = [e for e in self.endpoints if e.url not in exclude]
        if not candidates:
            return None
        healthy = [e for e in candidates if e.healthy] or candidates
        if len(healthy) == 1:
            return healthy[0]
        least = min(e.in_flight for e in healthy)
        tied = [e for e in healthy if e.in_flight == least]
        return tied[next(self._ticket) % len(tied)]

    @contextmanager
    def track(self, endpoint: Endpoint) -> Iterator[Endpoint]:
        endpoint.in_flight += 1
        try:
            yield endpoint
        finally:
            endpoint.in_flight -= 1
            endpoint.served += 1

    @property
    def any_healthy(self) -> bool:
        return any(e.healthy for e in self.endpoints)
