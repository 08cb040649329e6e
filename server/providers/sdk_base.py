"""What the three vendor-SDK providers share: error translation, streams opened on enter, health.

A provider's stream is an async generator of translated chunks that opens the vendor's stream in
its body and closes it in its ``finally``. ``open_stream`` pulls the first chunk before the
gateway sends its 200, so a refusal that arrives first (bad key, rate limit, overloaded — also as
Anthropic's ``event: error`` or Gemini's error object before any content) keeps its HTTP status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

from server.config import ModelConfig
from server.errors import PuenteError, UpstreamTimeout
from server.pipeline.request import StreamChunk
from server.providers import sdk_limits
from server.providers.base import Health
from server.providers.redact import Redactor
from server.providers.vendor_errors import ErrorContext, Translate, translate
from server.resilience.breaker import CircuitBreaker

T = TypeVar("T")


class SDKProvider:
    """Base of the ``openai``, ``anthropic`` and ``gemini`` providers."""

    kind = ""
    vendor = ""
    errors: Mapping[type[BaseException], Translate] = {}
    caught: tuple[type[BaseException], ...] = ()
    """The exception bases the vendor's SDK raises (its own; httpx2's where it lets them out)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # Read once: the entry is frozen, and ``limits`` builds a new object on each read when the
        # entry sets none (two per request before).
        self.limits = config.limits
        self.total_timeout = config.total_timeout
        # The key and every configured header value: all of them travel with each request.
        self.context = ErrorContext(self.vendor, config.name, Redactor.for_model(config).secrets)

    def failure(self, exc: BaseException) -> PuenteError:
        return translate(exc, self.errors, self.context)

    async def call(self, work: Awaitable[T]) -> T:
        """Await one SDK call with the model's ``total`` timeout, translating its errors."""
        total = self.total_timeout
        try:
            with sdk_limits.using(self.limits):
                async with asyncio.timeout(total):
                    return await work
        except TimeoutError:
            raise UpstreamTimeout(
                f"Model '{self.config.name}' did not finish within its {total:g}s timeout."
            ) from None
        except self.caught as exc:
            raise self.failure(exc) from None

    @asynccontextmanager
    async def open_stream(
        self, chunks: AsyncGenerator[StreamChunk, None]
    ) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        try:
            try:
                with sdk_limits.using(self.limits):  # the request is sent here
                    first: StreamChunk | None = await anext(chunks)
            except StopAsyncIteration:
                first = None
            except self.caught as exc:
                raise self.failure(exc) from None
            yield self._relay(first, chunks)
        finally:
            await chunks.aclose()

    async def _relay(
        self, first: StreamChunk | None, chunks: AsyncGenerator[StreamChunk, None]
    ) -> AsyncIterator[StreamChunk]:
        if first is None:
            return
        total = self.total_timeout
        # Checked per chunk (``timeouts.read`` bounds each wait): a timeout scope held across
        # ``yield`` would cancel whatever the consumer does between chunks.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        yield first
        try:
            async for chunk in chunks:
                if loop.time() > deadline:
                    raise UpstreamTimeout(
                        f"Model '{self.config.name}' did not finish within its {total:g}s timeout."
                    )
                yield chunk
        except self.caught as exc:
            raise self.failure(exc) from None

    def engine_state(self) -> str | None:
        return None

    def endpoint_breakers(self) -> list[tuple[str, CircuitBreaker]]:
        return []

    async def start(self) -> None:
        """Nothing to launch: the SDK client was built with the provider."""

    async def aclose(self) -> None:
        """The shared HTTP pool is closed by the app's lifespan, not per provider."""

    async def health(self) -> Health:
        # Probing a paid API on every /ready would cost money and rate limit; a configured key is
        # as much as Puente can know without a request.
        return Health("ready", detail=f"{self.vendor} is not probed")
