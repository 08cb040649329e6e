"""Requests in flight per configuration generation.

Every reload starts a new generation. A request is counted in the generation it was routed in, and
a reload waits until no request of an earlier generation is left before closing the providers
that only the old configuration used; requests routed before the reload finish on what they
started with.
"""

from __future__ import annotations

import asyncio


class Generations:
    def __init__(self) -> None:
        self.current = 0
        self._counts: dict[int, int] = {}
        self._changed = asyncio.Event()

    def enter(self) -> int:
        generation = self.current
        self._counts[generation] = self._counts.get(generation, 0) + 1
        return generation

    def leave(self, generation: int) -> None:
        left = self._counts.get(generation, 0) - 1
        if left > 0:
            self._counts[generation] = left
            return
        self._counts.pop(generation, None)
        self._changed.set()

    def advance(self) -> int:
        self.current += 1
        return self.current

    def in_flight_before(self, generation: int) -> int:
        return sum(n for g, n in self._counts.items() if g < generation)

    async def drained(self, generation: int) -> None:
        """Return once no request routed before ``generation`` is in flight."""
        while self.in_flight_before(generation):
            self._changed.clear()
            await self._changed.wait()
