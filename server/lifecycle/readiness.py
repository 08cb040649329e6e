"""``/ready``'s picture: every model's health, probed at most once per ``ready_cache`` seconds.

An unauthenticated ``/ready`` is cheap to ask for and each answer probes every upstream (with its
key), so probes are shared: calls within ``server.ready_cache`` seconds of the last probe reuse it,
and concurrent calls wait for the one probe in progress. Whether the instance is ready depends
only on the models ``required_for_ready`` (local engines by default): one cloud vendor down, or a
second engine loading, does not take the gateway out of a load balancer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from server.config import ModelConfig
from server.pipeline.pipeline import Pipeline
from server.providers.base import Health


@dataclass(frozen=True, slots=True)
class ModelHealth:
    config: ModelConfig
    health: Health


class Readiness:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._at = -float("inf")
        self._generation = -1
        self._last: list[ModelHealth] = []
        self._lock = asyncio.Lock()

    async def check(self) -> list[ModelHealth]:
        snapshot = self._pipeline.snapshot
        server = snapshot.config.server
        async with self._lock:
            fresh = time.monotonic() - self._at < server.ready_cache
            if fresh and self._generation == snapshot.generation:
                return self._last
            models = snapshot.catalog.available()
            providers = snapshot.catalog.providers
            timeout = server.ready_timeout

            async def probe(config: ModelConfig) -> ModelHealth:
                try:
                    health = await asyncio.wait_for(providers[config.name].health(), timeout)
                except TimeoutError:
                    health = Health("down", detail=f"health check took longer than {timeout:g}s")
                return ModelHealth(config, health)

            self._last = list(await asyncio.gather(*(probe(m) for m in models)))
            self._at, self._generation = time.monotonic(), snapshot.generation
            return self._last


def is_ready(models: list[ModelHealth]) -> bool:
    return all(m.health.ok for m in models if m.config.ready_required)
