"""Per-key limits: requests and tokens per minute, and token budgets per UTC day and month.

Minutes are sliding: a request counts against its key for the 60 seconds after it, kept in
one-second buckets, so "60 requests per minute" means at most 60 in any 60 seconds, with no burst
at the turn of a minute. The request count is checked and taken in one step at admission; tokens
are only known at the end, so they are added then (``settle``) and a key is refused once what it
already used reaches a limit — the request that crosses a line is answered, the next one is not.

Budgets count what requests still in flight may spend, too: admission *reserves* the request's
bound (its ``max_tokens``, or an estimate) against the day's and month's budget, and ``settle``
replaces the reservation with what was really used. Without it, fifty streams admitted at once
against a nearly spent budget would all be answered before the first one was counted.

``MemoryLimiter`` keeps the counts for one process; ``RedisLimiter`` (ratelimit_redis.py) keeps
the same counts in Redis, updated by Lua scripts, so any number of replicas share them exactly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from server.access import periods
from server.access.keys import ApiKey

WINDOW = 60

LimitName = Literal["requests", "tokens", "budget_day", "budget_month"]


class Decision(NamedTuple):
    """What the limiter said about one request, with what the ``x-ratelimit-*`` headers show.
    A named tuple: one is made on every request, cheaper than a frozen dataclass."""

    refused: LimitName | None = None
    retry_after: float = 0.0
    requests_used: int = 0
    """Requests in the window, this one included when it was admitted."""
    requests_reset: float = 0.0
    """Seconds until the window is empty again (OpenAI's "resets to its initial state")."""
    tokens_used: int = 0
    tokens_reset: float = 0.0
    budget_used: int = 0

    reservation: Reservation | None = None
    """What admission reserved against the key's budgets; ``settle`` gives it back."""


@dataclass(frozen=True, slots=True)
class Reservation:
    tokens: int
    day: str
    month: str


class Limiter(Protocol):
    async def admit(self, key: ApiKey, reserve: int = 0) -> Decision:
        """Check the key's limits and take the request; ``reserve`` tokens are held against its
        budgets until ``settle``."""
        ...

    async def settle(
        self, key: ApiKey, tokens: int, reservation: Reservation | None = None
    ) -> None:
        """Count the tokens a finished request used (called from the request's listener) and
        give back its reservation."""
        ...

    async def seed(self, day: dict[str, int], month: dict[str, int]) -> None:
        """Start the budgets from what the usage table says was already used."""
        ...

    async def aclose(self) -> None: ...


class SlidingWindow:
    """Counts in one-second buckets over the last ``WINDOW`` seconds."""

    __slots__ = ("_buckets", "_total")

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()
        self._total = 0

    def used(self, second: int) -> int:
        buckets = self._buckets
        while buckets and buckets[0][0] <= second - WINDOW:
            self._total -= buckets.popleft()[1]
        return self._total

    def add(self, second: int, amount: int) -> None:
        self.used(second)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([second, amount])
        self._total += amount

    def reset(self, now: float) -> float:
        """Seconds until everything in the window has left it (call after ``used``)."""
        return self._buckets[-1][0] + WINDOW - now if self._buckets else 0.0

    def wait(self, limit: int, now: float) -> float:
        """Seconds until the count drops below ``limit`` (0 when it already has)."""
        total = self._total
        for second, amount in self._buckets:
            if total < limit:
                break
            total -= amount
            if total < limit:
                return max(0.0, second + WINDOW - now)
        return 0.0


def budget_refusal(key: ApiKey, day_used: int, month_used: int, now: float) -> Decision | None:
    limits = key.limits
    if limits.budget_day and day_used >= limits.budget_day:
        return Decision("budget_day", periods.until_next_day(now), budget_used=day_used)
    if limits.budget_month and month_used >= limits.budget_month:
        return Decision("budget_month", periods.until_next_month(now), budget_used=month_used)
    return None


def _held(reservation: Reservation | None, period: str, current: str) -> int:
    if reservation is None:
        return 0
    return reservation.tokens if getattr(reservation, period) == current else 0


class _KeyState:
    __slots__ = ("_rolled", "day", "day_used", "month", "month_used", "requests", "tokens")

    def __init__(self) -> None:
        self.requests = SlidingWindow()
        self.tokens = SlidingWindow()
        self.day = ""
        self.day_used = 0
        self.month = ""
        self.month_used = 0
        self._rolled = -1
        """The UTC day (days since the epoch) ``day`` and ``month`` were last rolled to."""

    def roll(self, now: float) -> None:
        today = int(now // 86400)
        if today == self._rolled:
            return  # every request but the first of a day
        self._rolled = today
        day, month = periods.day_of(now), periods.month_of(now)
        if day != self.day:
            self.day, self.day_used = day, 0
        if month != self.month:
            self.month, self.month_used = month, 0


class MemoryLimiter:
    """Limits for one Puente process. Single-threaded asyncio makes each check-and-take atomic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str, _KeyState] = {}
        self._clock = clock

    def _state(self, name: str) -> _KeyState:
        state = self._keys.get(name)
        if state is None:
            state = self._keys[name] = _KeyState()
        return state

    async def admit(self, key: ApiKey, reserve: int = 0) -> Decision:
        now = self._clock()
        second = int(now)
        limits = key.limits
        state = self._state(key.name)
        # The windows are read first so that every answer, a refusal too, shows exact counts.
        requests, tokens = state.requests, state.tokens
        requests_used = requests.used(second)
        tokens_used = tokens.used(second)
        if limits.budget_day or limits.budget_month:
            state.roll(now)
            refusal = budget_refusal(key, state.day_used, state.month_used, now)
            if refusal is not None:
                return refusal._replace(
                    requests_used=requests_used,
                    requests_reset=requests.reset(now),
                    tokens_used=tokens_used,
                    tokens_reset=tokens.reset(now),
                )
        if limits.tpm and tokens_used >= limits.tpm:
            return Decision(
                "tokens",
                tokens.wait(limits.tpm, now),
                requests_used=requests_used,
                requests_reset=requests.reset(now),
                tokens_used=tokens_used,
                tokens_reset=tokens.reset(now),
            )
        if limits.rpm and requests_used >= limits.rpm:
            return Decision(
                "requests",
                requests.wait(limits.rpm, now),
                requests_used=requests_used,
                requests_reset=requests.reset(now),
                tokens_used=tokens_used,
                tokens_reset=tokens.reset(now),
            )
        requests.add(second, 1)
        reservation = None
        if (limits.budget_day or limits.budget_month) and reserve > 0:
            state.day_used += reserve
            state.month_used += reserve
            reservation = Reservation(reserve, state.day, state.month)
        return Decision(
            requests_used=requests_used + 1,
            requests_reset=second + WINDOW - now,
            tokens_used=tokens_used,
            tokens_reset=tokens.reset(now),
            reservation=reservation,
        )

    async def settle(
        self, key: ApiKey, tokens: int, reservation: Reservation | None = None
    ) -> None:
        now = self._clock()
        state = self._state(key.name)
        if tokens:
            state.tokens.add(int(now), tokens)
        state.roll(now)
        # A reservation made on a day (month) that has ended is not taken back from this one.
        state.day_used = max(0, state.day_used + tokens - _held(reservation, "day", state.day))
        month_held = _held(reservation, "month", state.month)
        state.month_used = max(0, state.month_used + tokens - month_held)

    async def seed(self, day: dict[str, int], month: dict[str, int]) -> None:
        now = self._clock()
        for name in day.keys() | month.keys():
            state = self._state(name)
            state.roll(now)
            state.day_used = day.get(name, 0)
            state.month_used = month.get(name, 0)

    async def aclose(self) -> None:
        return None
