"""A circuit breaker: something that keeps failing is taken out of rotation for a while.

    closed ──(``failures`` retryable failures in a row)──▶ open
    open ──(``cooldown`` seconds)──▶ half-open: one probe request is let through
    half-open ──probe succeeds──▶ closed      half-open ──probe fails──▶ open again

One guards each model (a vendor deployment, in ``server/resilience/chain.py``) and one each
endpoint of an OpenAI-compatible model (``server/providers/balancer.py``). An open breaker does not
refuse on its own: its owner skips it while there is somewhere else to go, so a dead replica or
deployment costs one failure rather than one per request, and is still tried when it is the only
way left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any


class BreakerState(Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge(self) -> int:
        """The value of ``puente_breaker_state``: 0 closed, 1 half-open, 2 open."""
        return _GAUGE[self]


_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_probe_at", "cooldown", "last_error",
                 "threshold", "trips")  # fmt: skip

    def __init__(
        self,
        failures: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        self.last_error = ""
        self.trips = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def available(self) -> bool:
        """Whether a request may go through now (without claiming the half-open probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        # One probe at a time. A probe that never reported back (its client left and the call
        # was cancelled) frees the slot after another cooldown instead of wedging the breaker.
        return self._probe_at is None or self._clock() - self._probe_at >= self.cooldown

    def allow(self) -> bool:
        """``available()``, and when half-open, claim the probe for the caller."""
        if not self.available():
            return False
        if self._opened_at is not None:
            self._probe_at = self._clock()
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_at = None
        self.last_error = ""

    def record_failure(self, reason: str = "") -> None:
        self.last_error = reason
        if self._opened_at is not None:
            # A failed probe, or a late failure of a call that began before it opened.
            self._opened_at = self._clock()
            self._probe_at = None
            return
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._probe_at = None
            self.trips += 1

    def retry_after(self) -> float:
        """Seconds until the next probe may go through (0 when it may now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """The breaker as ``/ready`` shows it."""
        state = self.state
        out: dict[str, Any] = {"state": state.value}
        if state is not BreakerState.CLOSED:
            out["retry_in"] = round(self.retry_after(), 1)
            out["last_error"] = self.last_error
        return out
