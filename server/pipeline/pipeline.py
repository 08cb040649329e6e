"""One request path behind every front door: admission → persona → resolution → resilience →
provider → shaping → finish.

A front door (``server/api/``) parses its wire format into an ``UpstreamRequest`` and hands it to
an ``Exchange``, which owns the request from then on::

    async with pipeline.exchange(api="chat", request_id=rid, principal=principal) as exchange:
        answer = await exchange.complete(request)  # or: await exchange.open_stream(request)

The exchange finishes the request exactly once, whatever the exit: an answer, an error, a client
that left, a drain cut-off or a bug (counted as a 500). A stream takes the finish over: it is
finished when the stream is closed. Finishing records metrics, the log line and the usage row
(through the listeners) and releases the configuration generation the request was served in.

Each attempt on a model (a retry, a fallback) works on its own copy of the request, shaped for
that model (``for_attempt``, ``shape_for_model``); nothing earlier is changed in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypeVar

from prometheus_client import Gauge

from server.config import Config
from server.errors import InvalidRequest, PuenteError
from server.lifecycle.drain import Drain
from server.lifecycle.generations import Generations
from server.observability.loop_metrics import LoopCounter, LoopHistogram
from server.observability.metrics import Metrics
from server.observability.request_context import request_started
from server.personas.farewell import replace_in_completion, replace_in_stream
from server.personas.persona import Persona, Personas
from server.personas.scope import (
    NOT_CHECKED,
    Verdict,
    add_usage,
    check_scope,
    farewell_completion,
    farewell_stream,
    with_check_usage,
)
from server.pipeline.catalog import Catalog, Route
from server.pipeline.record import Listener, RequestRecord
from server.pipeline.request import JSON, ChatRequest, Operation, StreamChunk, UpstreamRequest
from server.pipeline.snapshot import Snapshot
from server.pipeline.system_role import shape_for_model
from server.pipeline.tokens import estimate
from server.providers.base import ChunkStream, Embedder, TextCompleter, TokenCounter
from server.resilience.chain import Attempt, Resilience, Served
from server.resilience.concurrency import FREE, Lease

log = logging.getLogger("puente.request")

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed its connection before the answer was ready."""


class Admitted(Protocol):
    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers the admission adds (``x-ratelimit-*``)."""
        ...

    @property
    def reservation(self) -> object:
        """What it held against the caller's budgets, given back when the request ends."""
        ...


class Admission(Protocol):
    """Who is asking (``server.access.Principal``): may they use this model, within limits?"""

    @property
    def name(self) -> str | None: ...

    def admit(self, model: str, reserve: int) -> Awaitable[Admitted]:
        """Raise 404 / 429, or take the request, holding ``reserve`` tokens against budgets."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: the OpenAI object (``chat.completion``, ``list`` of embeddings,
    ``text_completion``) with ``model`` already the name the client is shown."""

    data: JSON
    model: str
    answered_by: str


class _Series:
    """One (model, provider)'s metric children, looked up once instead of on every request;
    changed with ``add`` and ``record`` (``server/observability/loop_metrics.py``)."""

    __slots__ = (
        "_by_status",
        "_metrics",
        "_model",
        "_provider",
        "duration",
        "output_tokens",
        "overhead",
        "prompt_tokens",
        "ttft",
    )

    def __init__(self, metrics: Metrics, model: str, provider: str) -> None:
        self._metrics, self._model, self._provider = metrics, model, provider
        self._by_status: dict[int, LoopCounter] = {}
        self.duration: LoopHistogram = metrics.duration.labels(model, provider)
        self.ttft: LoopHistogram = metrics.ttft.labels(model, provider)
        self.output_tokens: LoopCounter = metrics.output_tokens.labels(model, provider)
        self.prompt_tokens: LoopCounter = metrics.prompt_tokens.labels(model, provider)
        self.overhead: LoopHistogram = metrics.overhead.labels(model, provider)

    def requests(self, status: int) -> LoopCounter:
        child = self._by_status.get(status)
        if child is None:
            child = self._metrics.requests.labels(self._model, self._provider, str(status))
            self._by_status[status] = child
        return child


class InFlight:
    """One model's requests in flight (``puente_requests_in_flight``): a plain count that its
    gauge reads when Prometheus scrapes, instead of the gauge's locked ``inc`` and ``dec`` on
    every request."""

    __slots__ = ("count",)

    def __init__(self, gauge: Gauge) -> None:
        self.count = 0
        gauge.set_function(lambda: self.count)


class Pipeline:
    def __init__(self, metrics: Metrics, config: Config, catalog: Catalog) -> None:
        self.metrics = metrics
        self.resilience = Resilience(metrics)
        self.drain = Drain()
        self.generations = Generations()
        self.listeners: list[Listener] = []
        self._series: dict[tuple[str, str], _Series] = {}
        self._in_flight: dict[str, InFlight] = {}
        self.snapshot = Snapshot(config, catalog, Personas(config.personas))
        self.resilience.catalog = catalog

    def swap(self, config: Config, catalog: Catalog) -> int:
        """Serve a new configuration from now on (a reload); returns its generation. Requests
        already admitted finish on the snapshot they started with."""
        generation = self.generations.advance()
        self.snapshot = Snapshot(config, catalog, Personas(config.personas), generation)
        self.resilience.catalog = catalog
        return generation

    async def count_input(self, request: ChatRequest) -> tuple[int, bool]:
        """The input tokens ``request`` would cost on what its model name resolves to (a
        persona's prompt included), and whether that is the target's exact count or an
        estimate (``server/pipeline/tokens.py``). Refusals are those of a real request (404)."""
        snapshot = self.snapshot
        persona = snapshot.personas.get(request.model)
        route = snapshot.catalog.resolve(persona.model if persona else request.model)
        if persona is not None:
            request = persona.apply(request)
        if isinstance(route.provider, TokenCounter):
            try:
                prepared = request.for_attempt(route.upstream_model)
                return await route.provider.count_tokens(prepared), True
            except PuenteError as error:
                # A count is advice: an engine that cannot count now still gets an estimate.
                log.info("exact count failed, estimated instead: %s", error.message)
        return estimate(request.body), False

    def in_flight(self, model: str) -> InFlight:
        count = self._in_flight.get(model)
        if count is None:
            count = self._in_flight[model] = InFlight(self.metrics.in_flight.labels(model))
        return count

    def exchange(self, *, api: str, request_id: str, principal: Admission) -> Exchange:
        record = RequestRecord(request_id=request_id, api=api, principal=principal.name)
        # From when the ASGI server handed the request over, when a middleware saw it.
        record.started = request_started.get() or record.started
        return Exchange(self, record, principal)

    async def finish(self, record: RequestRecord) -> None:
        record.duration = time.perf_counter() - record.started
        labels = (record.model, record.provider)
        series = self._series.get(labels)
        if series is None:
            # Labels are configured names (or "unknown"), so this stays as small as the config.
            series = self._series[labels] = _Series(self.metrics, *labels)
        series.requests(record.status).add()
        series.duration.record(record.duration)
        if record.first_token is not None:
            series.ttft.record(record.first_token)
        if record.completion_tokens:
            series.output_tokens.add(record.completion_tokens)
        if record.prompt_tokens:
            series.prompt_tokens.add(record.prompt_tokens)
        if record.error_kind is not None and record.provider:
            self.metrics.upstream_errors.labels(*labels, record.error_kind).inc()
        if record.provider and record.status < 400:
            series.overhead.record(max(0.0, record.duration - record.upstream_time))
        log.info(
            "%s model=%s provider=%s stream=%s status=%s duration_ms=%.1f tokens=%d/%d",
            record.api,
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
                await listener(record)
            except Exception:
                # A broken listener must not break answering; it is a bug worth a traceback.
                log.exception("request listener %r failed", listener)


class Exchange:
    """One request, from its admission to its record; see the module's docstring."""

    def __init__(self, pipeline: Pipeline, record: RequestRecord, principal: Admission) -> None:
        self.record = record
        self.headers: dict[str, str] = {}
        """Response headers the pipeline adds (``x-ratelimit-*``, ``x-puente-model``)."""
        self._pipeline = pipeline
        self._principal = principal
        # The configuration this request is served by, start to end (fallbacks included).
        self._snapshot = pipeline.snapshot
        self._generation = pipeline.generations.enter()
        self._in_flight: InFlight | None = None
        self._handed_over = False
        self._stream: AnswerStream | None = None
        self._finished = False

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, PuenteError):
            self.record.fail(exc)
            if self.record.retried:
                # Puente already retried or fell back: an SDK that retries on top multiplies
                # the upstream calls (the openai and anthropic SDKs honour this header).
                exc.headers.setdefault("x-should-retry", "false")
        elif isinstance(exc, ClientDisconnected):
            self.record.client_left()
        elif exc is not None:
            self.record.status, self.record.error_kind = 500, "internal"
        if exc is not None and self._stream is not None:
            # The stream was opened but never handed to a client (its front door failed to
            # start it): close the upstream too, which finishes the request.
            await self._stream.aclose()
        elif exc is not None or not self._handed_over:
            await self.finish()

    async def finish(self) -> None:
        """The request is over: count it once (a second call does nothing)."""
        if self._finished:
            return
        self._finished = True
        if self._in_flight is not None:
            self._in_flight.count -= 1
        self._pipeline.generations.leave(self._generation)
        await self._pipeline.finish(self.record)

    # -- the two ways to answer ----------------------------------------------------------------

    async def complete(self, request: UpstreamRequest) -> Answer:
        prepared, persona, route = await self._prepare(request)
        verdict = NOT_CHECKED
        if persona is not None and persona.config.checks_scope:
            verdict = await self._check_scope(prepared, persona, route)
        if persona is not None and verdict.out_of_scope:
            assert isinstance(prepared, ChatRequest)
            assert persona.config.farewell  # a checked scope requires one
            data = farewell_completion(
                prepared, persona.config.farewell, verdict, self._farewell_said
            )
            self.record.take_usage(data["usage"])
            return Answer(data, prepared.model, self.record.answered_by)
        attempt = partial(_whole, prepared, self.record, checked=route)
        with self._pipeline.drain.track():
            served = await self._serve(prepared, persona, route, attempt)
        served.lease.release()
        data, shown = served.value, self._answered(prepared, served, persona)
        if served.route.upstream_model != shown:
            data["model"] = shown
        if verdict.usage:
            data["usage"] = add_usage(data.get("usage"), verdict.usage)
        self.record.take_usage(data.get("usage"))
        if persona is not None and (farewell := persona.config.farewell):
            replace_in_completion(data, persona.config.marker, farewell, self._farewell_said)
        return Answer(data, shown, served.name)

    async def open_stream(self, request: UpstreamRequest) -> AnswerStream:
        """Open the upstream stream; errors here still become a plain HTTP error response. The
        returned stream owns the rest of the request: close it (``aclose``) when done."""
        prepared, persona, route = await self._prepare(request)
        verdict = NOT_CHECKED
        if persona is not None and persona.config.checks_scope:
            verdict = await self._check_scope(prepared, persona, route)
        if persona is not None and verdict.out_of_scope:
            assert isinstance(prepared, ChatRequest)
            assert persona.config.farewell  # a checked scope requires one
            said = farewell_stream(prepared, persona.config.farewell, verdict, self._farewell_said)
            self._handed_over = True
            return AnswerStream(
                self,
                AsyncExitStack(),
                said,
                model=prepared.model,
                answered_by=self.record.answered_by,
                rename=False,
                lease=FREE,
            )
        attempt = partial(_opened, prepared, self.record, checked=route)
        with self._pipeline.drain.track():
            served = await self._serve(prepared, persona, route, attempt)
        (stack, chunks), shown = served.value, self._answered(prepared, served, persona)
        if persona is not None and (farewell := persona.config.farewell):
            chunks = replace_in_stream(chunks, persona.config.marker, farewell, self._farewell_said)
        if verdict.usage:
            chunks = with_check_usage(chunks, verdict.usage)
        self._handed_over = True
        self._stream = AnswerStream(
            self,
            stack,
            chunks,
            model=shown,
            answered_by=served.name,
            rename=served.route.upstream_model != shown,
            lease=served.lease,
        )
        return self._stream

    # -- the steps -----------------------------------------------------------------------------

    async def _prepare(
        self, request: UpstreamRequest
    ) -> tuple[UpstreamRequest, Persona | None, Route]:
        record = self.record
        record.stream = request.stream
        persona = self._snapshot.personas.get(request.model)
        # 404 for a model the key may not use, 429 over limits; else its x-ratelimit-* headers.
        admitted = await self._principal.admit(request.model, _bound(request, persona))
        record.reservation = admitted.reservation
        self.headers.update(admitted.headers)
        if persona is not None:
            if not isinstance(request, ChatRequest):
                raise InvalidRequest(
                    f"'{persona.name}' is a persona: it answers chat requests only.",
                    param="model",
                    code="model_not_supported",
                )
            record.model = record.persona = persona.name
            request = persona.apply(request)
        route = self._snapshot.catalog.resolve(persona.model if persona else request.model)
        _check_ability(route, request.operation)
        _check_caps(route, request.body)
        if persona is None:
            record.model = route.config.name
        record.provider = route.kind
        self._in_flight = self._pipeline.in_flight(record.model)
        self._in_flight.count += 1
        return request, persona, route

    async def _check_scope(
        self, request: UpstreamRequest, persona: Persona, route: Route
    ) -> Verdict:
        """A persona with a checked scope: is the question in it? One short classification on
        the persona's model, through the same resilience path but without fallbacks; its
        failure lets the model answer (``server/personas/scope.py``)."""
        assert isinstance(request, ChatRequest)  # _prepare refuses a persona anything else
        model = persona.model

        async def ask(check: ChatRequest) -> JSON:
            with self._pipeline.drain.track():
                served = await self._pipeline.resilience.run(
                    self._snapshot.catalog,
                    self.record,
                    model,
                    route,
                    attempt=partial(_whole, check, self.record),
                    fallbacks=(),
                )
            served.lease.release()
            # Who answers a farewell; the answer's own model replaces it when there is one.
            self.record.answered_by = self.headers["x-puente-model"] = served.name
            return served.value

        return await check_scope(persona.config, request, ask, self._pipeline.metrics)

    def _serve(
        self,
        request: UpstreamRequest,
        persona: Persona | None,
        route: Route,
        attempt: Attempt[T],
    ) -> Awaitable[Served[T]]:
        name = persona.model if persona else request.model
        return self._pipeline.resilience.run(
            self._snapshot.catalog,
            self.record,
            name,
            route,
            attempt=attempt,
            fallbacks=persona.config.fallbacks if persona is not None else None,
        )

    def _answered(
        self, request: UpstreamRequest, served: Served[Any], persona: Persona | None
    ) -> str:
        """Note who answered; returns the name the response shows. That is the fallback's when
        one answered, except under a persona, whose name stays (the header still says)."""
        self.record.answered_by = served.name
        self.record.provider = served.route.kind
        self.headers["x-puente-model"] = served.name
        return served.name if served.fell_back and persona is None else request.model

    def _farewell_said(self) -> None:
        self.record.farewell = True
        self._pipeline.metrics.farewells.labels(self.record.persona).inc()


class AnswerStream:
    """An opened answer, as ``chat.completion.chunk`` objects (or ``text_completion`` chunks).

    The last chunk is the usage-only one (``choices: []``): every stream asks its upstream for
    usage, to count tokens; a front door drops it when its client did not ask. Only the gateway's
    own work between chunks counts as overhead: waiting for the next chunk is upstream time.
    """

    def __init__(
        self,
        exchange: Exchange,
        stack: AsyncExitStack,
        chunks: AsyncIterator[StreamChunk],
        *,
        model: str,
        answered_by: str,
        rename: bool,
        lease: Lease,
    ) -> None:
        self.exchange = exchange
        self.record = exchange.record
        self.model = model
        """The name chunks carry."""
        self.answered_by = answered_by
        self.drain = exchange._pipeline.drain
        self._stack = stack
        self._chunks = chunks
        self._rename = rename
        self._lease = lease
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        record, model, rename = self.record, self.model, self._rename
        iterator = aiter(self._chunks)
        while True:
            waited = time.perf_counter()
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                # The answer is whole: the request is finished (its tokens counted against the
                # key) before the front door sends its last frame, so a client that sends its
                # next request as soon as it reads the end finds this one accounted for.
                await self.aclose()
                return
            finally:
                record.upstream_time += time.perf_counter() - waited
            if chunk.is_usage_only:
                record.take_usage(chunk.data.get("usage"))
            elif record.first_token is None:
                record.first_token = time.perf_counter() - record.started
            if rename:
                chunk.data["model"] = model
            yield chunk

    def fail(self, error: PuenteError) -> None:
        """The stream failed after it began (the front door tells its client in-stream)."""
        self.record.fail(error)

    async def aclose(self) -> None:
        """Close the upstream, free the model's slot and finish the request (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stack.aclose()
        finally:
            self._lease.release()
            await self.exchange.finish()


# -- one attempt on one model (``Resilience.run`` calls these with each route) ----------------

# Tokens held against a key's budget for a request that sets no output bound of its own.
DEFAULT_RESERVE = 1024


def _bound(request: UpstreamRequest, persona: Persona | None) -> int:
    """What a request may spend, at most, as far as admission can tell: its prompt (about four
    bytes a token) and its output bound (``max_tokens``, the persona's cap, or an estimate),
    times ``n``. Held against the key's budgets until the request ends."""
    body = request.body
    if request.operation == "embeddings":
        return _prompt_estimate(body.get("input"))
    bounds = [
        v
        for v in (body.get("max_completion_tokens"), body.get("max_tokens"))
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
    if persona is not None and persona.config.caps.max_tokens is not None:
        bounds.append(persona.config.caps.max_tokens)
    output = min(bounds) if bounds else DEFAULT_RESERVE
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    prompt = _prompt_estimate(body.get("messages", body.get("prompt")))
    return prompt + output * choices


def _prompt_estimate(value: object) -> int:
    # A loop, not recursion: a client may nest content a thousand levels deep.
    total, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            # ASCII text is as long in UTF-8 as in characters: no copy to count it.
            total += (len(item) if item.isascii() else len(item.encode())) // 4 + 1
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, int):
            total += 1  # a token id
    return total


def _check_caps(route: Route, body: JSON) -> None:
    """The model's caps on what one request may ask for (``max_output_tokens``, ``max_n``)."""
    config = route.config
    caps = (
        ("max_tokens", config.max_output_tokens),
        ("max_completion_tokens", config.max_output_tokens),
        ("n", config.max_n),
    )
    for param, cap in caps:
        value = body.get(param)
        if cap is not None and isinstance(value, int | float) and value > cap:
            raise InvalidRequest(
                f"'{param}' is {value}, above the limit of {cap} for model '{config.name}'.",
                param=param,
                code="invalid_value",
            )


def _check_ability(route: Route, operation: Operation) -> None:
    provider = route.provider
    if operation == "embeddings" and not isinstance(provider, Embedder):
        what = "embeddings (/v1/embeddings)"
    elif operation == "completions" and not isinstance(provider, TextCompleter):
        what = "legacy completions (/v1/completions); use /v1/chat/completions"
    else:
        return
    raise InvalidRequest(
        f"Model '{route.config.name}' does not serve {what}.",
        param="model",
        code="model_not_supported",
    )


def _for(request: UpstreamRequest, route: Route, checked: Route | None) -> UpstreamRequest:
    """``request`` as this model gets it: its own copy, with its upstream name and shape. The
    model's abilities and caps are checked unless they were on this very route (``checked``:
    the requested model, which ``Exchange._prepare`` checked on the same request)."""
    if route is not checked:
        _check_ability(route, request.operation)
        _check_caps(route, request.body)
    return shape_for_model(request.for_attempt(route.upstream_model), route.config.system_role)


async def _whole(
    request: UpstreamRequest, record: RequestRecord, route: Route, checked: Route | None = None
) -> JSON:
    prepared, provider = _for(request, route, checked), route.provider
    work: Awaitable[JSON]
    if prepared.operation == "embeddings":
        assert isinstance(provider, Embedder)
        work = provider.embed(prepared)
    elif prepared.operation == "completions":
        assert isinstance(provider, TextCompleter)
        work = provider.complete_text(prepared)
    else:
        assert isinstance(prepared, ChatRequest)
        work = provider.complete(prepared)
    started = time.perf_counter()
    try:
        return await work
    finally:
        record.upstream_time += time.perf_counter() - started


Opened = tuple[AsyncExitStack, AsyncIterator[StreamChunk]]


async def _opened(
    request: UpstreamRequest, record: RequestRecord, route: Route, checked: Route | None = None
) -> Opened:
    # The only place a stream is retried: nothing has reached the client yet.
    prepared, provider = _for(request, route, checked), route.provider
    context: ChunkStream
    if prepared.operation == "completions":
        assert isinstance(provider, TextCompleter)
        context = provider.stream_text(prepared)
    else:
        assert isinstance(prepared, ChatRequest)
        context = provider.stream(prepared)
    stack = AsyncExitStack()
    started = time.perf_counter()
    try:
        chunks = await stack.enter_async_context(context)
    finally:
        record.upstream_time += time.perf_counter() - started
    return stack, chunks
