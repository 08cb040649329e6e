"""The path of one chat completion behind the HTTP layer: route, call, count.

The HTTP layer parses and authenticates; this module resolves the model, calls its provider,
shapes what comes back for the client and records the request once, at its end, for metrics and
for anyone else listening (usage records).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from server.errors import PuenteError
from server.lifecycle.drain import Drain
from server.lifecycle.generations import Generations
from server.observability.metrics import Metrics
from server.personas.farewell import replace_in_completion, replace_in_stream
from server.personas.persona import Persona, Personas
from server.pipeline.catalog import Route, Router
from server.pipeline.request import JSON, ChatRequest, StreamChunk
from server.pipeline.system_role import shape_for_model
from server.resilience.chain import Resilience, Served
from server.resilience.concurrency import Lease

log = logging.getLogger("puente.request")

SSE_DONE = b"data: [DONE]\n\n"

T = TypeVar("T")


@dataclass(slots=True)
class RequestRecord:
    """What one request did; filled in as it goes and handed to listeners when it ends."""

    request_id: str
    stream: bool = False
    model: str = "unknown"
    """The public name, once it resolved to something configured (a label, so never free text)."""
    provider: str = ""
    status: int = 200
    error_kind: str | None = None
    started: float = field(default_factory=time.perf_counter)
    upstream_time: float = 0.0
    first_token: float | None = None
    duration: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    principal: str | None = None
    persona: str | None = None
    answered_by: str = ""
    """The public name of the model that answered: ``model``'s, or a fallback's."""
    extra: dict[str, Any] = field(default_factory=dict)

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fail(self, error: PuenteError) -> None:
        self.status = error.status_code
        self.error_kind = error.kind


Listener = Callable[[RequestRecord], None]
Opened = AbstractAsyncContextManager[AsyncIterator[StreamChunk]]


class Gateway:
    def __init__(self, router: Router, metrics: Metrics, personas: Personas | None = None) -> None:
        self.router = router
        self.metrics = metrics
        self.personas = personas or Personas()
        # Swapped with ``router`` on reload (server/lifecycle/reloader.py), which waits on these.
        self.generations = Generations()
        self.listeners: list[Listener] = []
        # Retries, fallbacks, breakers and caps (server/resilience/); shutdown (lifecycle/drain.py).
        self.resilience = Resilience(metrics, lambda: self.router)
        self.drain = Drain()

    # -- the two ways to answer ----------------------------------------------------------------

    async def complete(self, request: ChatRequest, record: RequestRecord) -> JSON:
        persona = self._persona(request, record)
        name = persona.model if persona else request.model
        route = self.router.resolve(name)
        self._begin(request, record, route.kind, route.upstream_model)

        async def attempt(target: Route) -> JSON:
            shape_for_model(request, target.config.system_role)
            return await self._timed(record, target.provider.complete(request))

        with self.drain.track():
            served = await self.resilience.run(
                request, record, name, route, attempt=attempt, fallbacks=_fallbacks(persona)
            )
        served.lease.release()
        data, shown = served.value, self._answered(request, record, served)
        if request.upstream_model != shown:
            data["model"] = shown
        record.take_usage(data.get("usage"))
        if persona is not None and (farewell := persona.config.farewell):
            marker, said = persona.config.marker, self._farewell_said(record)
            replace_in_completion(data, marker, farewell, said)
        return data

    async def open_stream(self, request: ChatRequest, record: RequestRecord) -> ChatStream:
        """Open the upstream stream; errors here still become a plain HTTP error response."""
        persona = self._persona(request, record)
        name = persona.model if persona else request.model
        route = self.router.resolve(name)
        self._begin(request, record, route.kind, route.upstream_model)

        async def attempt(target: Route) -> tuple[Opened, AsyncIterator[StreamChunk]]:
            # The only place a stream is retried: nothing has reached the client yet.
            shape_for_model(request, target.config.system_role)
            context = target.provider.stream(request)
            return context, await self._timed(record, context.__aenter__())

        with self.drain.track():
            served = await self.resilience.run(
                request, record, name, route, attempt=attempt, fallbacks=_fallbacks(persona)
            )
        (context, chunks), shown = served.value, self._answered(request, record, served)
        if persona is not None and (farewell := persona.config.farewell):
            marker, said = persona.config.marker, self._farewell_said(record)
            chunks = replace_in_stream(chunks, marker, farewell, said)
        return ChatStream(
            request, record, context, chunks, model=shown, lease=served.lease, drain=self.drain
        )

    async def _timed(self, record: RequestRecord, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            record.upstream_time += time.perf_counter() - started

    def _answered(self, request: ChatRequest, record: RequestRecord, served: Served[Any]) -> str:
        """Note who answered; returns the name the response shows. That is the fallback's when
        one answered, except under a persona, whose name stays (the header still says)."""
        record.answered_by = served.name
        record.provider = served.route.kind
        return served.name if served.fell_back and record.persona is None else request.model

    def _persona(self, request: ChatRequest, record: RequestRecord) -> Persona | None:
        """A persona's name becomes its model plus its server-side messages and caps."""
        persona = self.personas.get(request.model)
        if persona is not None:
            record.model = record.persona = persona.name
            persona.shape(request)
        return persona

    def _farewell_said(self, record: RequestRecord) -> Callable[[], None]:
        def said() -> None:
            record.extra["farewell"] = True
            self.metrics.farewells.labels(record.persona).inc()

        return said

    def _begin(
        self, request: ChatRequest, record: RequestRecord, kind: str, upstream_model: str
    ) -> None:
        request.upstream_model = upstream_model
        record.model = request.model
        record.provider = kind
        self.metrics.in_flight.labels(record.model).inc()
        record.extra["counted_in_flight"] = True
        record.extra["generation"] = self.generations.enter()

    # -- the end of every request ---------------------------------------------------------------

    def finish(self, record: RequestRecord) -> None:
        record.duration = time.perf_counter() - record.started
        m, labels = self.metrics, (record.model, record.provider)
        if record.extra.pop("counted_in_flight", False):
            m.in_flight.labels(record.model).dec()
        generation = record.extra.pop("generation", None)
        if generation is not None:
            self.generations.leave(generation)
        m.requests.labels(record.model, record.provider, str(record.status)).inc()
        m.duration.labels(*labels).observe(record.duration)
        if record.first_token is not None:
            m.ttft.labels(*labels).observe(record.first_token)
        if record.completion_tokens:
            m.output_tokens.labels(*labels).inc(record.completion_tokens)
        if record.prompt_tokens:
            m.prompt_tokens.labels(*labels).inc(record.prompt_tokens)
        if record.error_kind is not None and record.provider:
            m.upstream_errors.labels(*labels, record.error_kind).inc()
        if record.provider and record.status < 400:
            m.overhead.labels(*labels).observe(max(0.0, record.duration - record.upstream_time))
        log.info(
            "chat model=%s provider=%s stream=%s status=%s duration_ms=%.1f tokens=%d/%d",
            record.model,
            record.provider or "-",
            record.stream,
            record.status,
            record.duration * 1000,
            record.prompt_tokens,
            record.completion_tokens,
        )
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                # A broken listener must not break answering; it is a bug worth a traceback.
                log.exception("request listener %r failed", listener)


def _fallbacks(persona: Persona | None) -> list[str] | None:
    return persona.config.fallbacks if persona is not None else None


class ChatStream:
    """An opened upstream stream, turned into SSE frames for the client.

    Only the gateway's own work between upstream chunks counts as overhead: time spent waiting
    for the next upstream chunk is upstream time.
    """

    def __init__(
        self,
        request: ChatRequest,
        record: RequestRecord,
        context: AbstractAsyncContextManager[AsyncIterator[StreamChunk]],
        chunks: AsyncIterator[StreamChunk],
        *,
        model: str | None = None,
        lease: Lease | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.request = request
        self.record = record
        self.model = model or request.model
        """The name chunks carry and ``x-puente-model`` says."""
        self.lease = lease
        self.drain = drain
        self._context = context
        self._chunks = chunks
        self._closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        request, record, model = self.request, self.record, self.model
        rename = request.upstream_model != model
        iterator = aiter(self._chunks)
        try:
            while True:
                waited = time.perf_counter()
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                finally:
                    record.upstream_time += time.perf_counter() - waited
                if chunk.is_usage_only:
                    record.take_usage(chunk.data.get("usage"))
                    if not request.include_usage:
                        continue
                if rename:
                    chunk.data["model"] = model
                if record.first_token is None:
                    record.first_token = time.perf_counter() - record.started
                yield b"data: " + chunk.encode() + b"\n\n"
        except PuenteError as error:
            # The 200 and some chunks are already out: the error goes in the stream.
            record.fail(error)
            log.warning("stream failed after it began: %s", error.message)
            yield b"event: error\ndata: " + orjson.dumps(error.to_dict()) + b"\n\n"
        yield SSE_DONE

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._context.__aexit__(None, None, None)
            finally:
                if self.lease is not None:
                    self.lease.release()
