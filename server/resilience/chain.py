"""Retries, fallbacks, cooldowns and concurrency caps around any provider's call.

Works on the ``Provider`` interface and ``PuenteError.retryable`` alone, so every provider gets it
(OpenAI-compatible, vLLM, the SDK-based vendors). For one request:

1. The requested model, then each of its ``fallbacks`` in order, is a candidate.
2. A candidate whose breaker is open (it kept failing) is skipped while a later one exists; the
   last candidate is always tried, but only once, so an outage costs one attempt per request.
3. The candidate's concurrency slot is taken (the requested model's own cap answers 429 at once
   when its queue is full; a fallback's full cap just moves on to the next candidate).
4. Attempts: a retryable failure (connection, timeout, 429, 5xx, 529 …) is retried after an
   exponential backoff with jitter, never sooner than the upstream's ``Retry-After``, at most
   ``retries`` times and never past the request's ``deadline``. A client error is not retried.
5. When the candidate still fails with a retryable error (or says the prompt is too long and
   ``fallback_on_context_length`` is set) the next candidate serves the request, translated for
   its vendor by its own provider. Otherwise, or when none is left, the client gets the last error.

A stream is retried only while it is being opened: once a byte reached the client it is not.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.config import ModelConfig
from server.errors import (
    ModelNotFound,
    PuenteError,
    RateLimited,
    ServiceUnavailable,
    parse_retry_after,
)
from server.observability.metrics import Metrics
from server.pipeline.catalog import Catalog, Route
from server.pipeline.record import RequestRecord
from server.resilience.breaker import CircuitBreaker
from server.resilience.concurrency import FREE, ConcurrencyLimiter, Lease

log = logging.getLogger("puente.resilience")

T = TypeVar("T")

# How vendors and engines say "the prompt does not fit" (OpenAI's code, vLLM's, Anthropic's and
# Gemini's messages); providers that know should set ``code="context_length_exceeded"``.
_CONTEXT_LENGTH = re.compile(
    r"context.length|context window|prompt is too long|input is too long|"
    r"maximum number of tokens|too many tokens",
    re.IGNORECASE,
)


def is_context_length(error: PuenteError) -> bool:
    if error.status_code not in (400, 413):
        return False
    return error.code == "context_length_exceeded" or bool(_CONTEXT_LENGTH.search(error.message))


def retry_after(error: PuenteError) -> float | None:
    """Seconds the upstream asked to wait before the same request is tried again."""
    return parse_retry_after(error.headers.get("Retry-After"))


class Backoff:
    """``base``·2ⁿ⁻¹ seconds before retry n, half of it fixed and half random (so a crowd of
    clients does not retry in step), capped at ``max``."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def delay(self, config: ModelConfig, retry: int) -> float:
        step = min(config.backoff.max, config.backoff.base * 2.0 ** (retry - 1))
        return step / 2 + self._rng.uniform(0, step / 2)


@dataclass(slots=True)
class Guard:
    """What protects one configured model: its breaker and its concurrency cap."""

    config: ModelConfig
    breaker: CircuitBreaker
    limiter: ConcurrencyLimiter


@dataclass(slots=True)
class Served(Generic[T]):
    value: T
    name: str
    """The public name of the model that answered."""
    route: Route
    lease: Lease
    fell_back: bool


Attempt = Callable[[Route], Awaitable[T]]
"""One try on one model: the caller's operation (a whole answer, or opening a stream)."""


class Resilience:
    def __init__(self, metrics: Metrics, backoff: Backoff | None = None) -> None:
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.catalog: Catalog | None = None
        """The configuration served now, for what operators see (set with each snapshot)."""
        self._guards: dict[str, Guard] = {}
        metrics.registry.register(_StateCollector(self))

    def guard(self, config: ModelConfig) -> Guard:
        guard = self._guards.get(config.name)
        if guard is not None and guard.config is not config and guard.config == config:
            guard.config = config  # reloaded unchanged: keep its state
        # Reloaded with new settings: fresh state. Requests that hold the old cap's leases give
        # them back to the old one.
        if guard is None or guard.config is not config:
            guard = Guard(
                config,
                CircuitBreaker(config.breaker.failures, config.breaker.cooldown),
                ConcurrencyLimiter(
                    config.name, config.max_concurrency, config.max_queue, config.queue_timeout
                ),
            )
            self._guards[config.name] = guard
        return guard

    async def run(
        self,
        catalog: Catalog,
        record: RequestRecord,
        requested: str,
        route: Route,
        *,
        attempt: Attempt[T],
        fallbacks: Iterable[str] | None = None,
    ) -> Served[T]:
        """Serve with ``attempt`` on ``route`` (what the model name ``requested`` resolved to in
        ``catalog``) or a fallback from the same catalog; the caller releases ``Served.lease``
        when the answer is over. ``fallbacks`` replaces the model's own list (a persona's, say).
        ``attempt`` builds its own request for each model it is given."""
        primary = route.config
        deadline = record.started + primary.deadline
        chain = self._chain(requested, route, primary.fallbacks if fallbacks is None else fallbacks)
        last_error: PuenteError | None = None
        failed_from = ""
        for index, name in enumerate(chain):
            is_last = index == len(chain) - 1
            if index:
                if time.perf_counter() >= deadline:
                    break
                try:
                    route = catalog.resolve(name)
                except ModelNotFound as error:
                    log.warning("fallback %s is not available: %s", name, error.message)
                    continue
            guard = self.guard(route.config)
            if not guard.breaker.available() and not is_last:
                last_error = last_error or _cooling(name, guard.breaker)
                failed_from = failed_from or name
                log.info("model %s is cooling down; trying %s", name, chain[index + 1])
                continue
            try:
                # A model without a cap has nothing to wait for: no coroutine to make.
                lease = FREE if guard.limiter.limit is None else await self._acquire(guard, record)
            except RateLimited as error:
                if not index:
                    raise  # the requested model's own cap: 429 at once
                last_error, failed_from = error, name
                continue
            if failed_from:
                record.retried = True
                self.metrics.fallbacks.labels(failed_from, route.config.name).inc()
            try:
                value = await self._attempts(
                    name=name,
                    route=route,
                    guard=guard,
                    record=record,
                    attempt=attempt,
                    deadline=deadline,
                )
            except PuenteError as error:
                lease.release()
                if not (
                    error.retryable
                    or (primary.fallback_on_context_length and is_context_length(error))
                ):
                    raise
                last_error, failed_from = error, name
                continue
            except BaseException:
                lease.release()
                raise
            return Served(value, name, route, lease, fell_back=bool(index))
        assert last_error is not None  # the chain is never empty and every path above sets it
        raise last_error

    def _chain(self, requested: str, route: Route, fallbacks: Iterable[str]) -> list[str]:
        chain = [requested]
        for name in fallbacks:
            if name not in chain and name != route.config.name:
                chain.append(name)
        return chain

    async def _acquire(self, guard: Guard, record: RequestRecord) -> Lease:
        limiter = guard.limiter
        waited = time.perf_counter()
        try:
            return await limiter.acquire()
        finally:
            record.upstream_time += time.perf_counter() - waited  # waiting is not our own work

    async def _attempts(
        self,
        *,
        name: str,
        route: Route,
        guard: Guard,
        record: RequestRecord,
        attempt: Attempt[T],
        deadline: float,
    ) -> T:
        breaker, config = guard.breaker, route.config
        # An open breaker on the last way left: one attempt, no retries, so an outage is not
        # hammered, yet the first request after a recovery gets through.
        retries = config.retries if breaker.allow() else 0
        tries = 0
        while True:
            tries += 1
            record.attempts += 1
            try:
                value = await attempt(route)
            except PuenteError as error:
                if not error.retryable:
                    if error.status_code < 500:
                        breaker.record_success()  # it answered; the request was at fault
                    raise
                breaker.record_failure(error.kind)
                delay = self._delay(config, error, tries, retries, deadline)
                if delay is None or not breaker.allow():
                    raise
                self.metrics.retries.labels(config.name).inc()
                log.info(
                    "retrying model=%s attempt=%d in %.2fs after %s (HTTP %d)",
                    name,
                    tries + 1,
                    delay,
                    error.kind,
                    error.status_code,
                )
                record.retried = True
                await asyncio.sleep(delay)
                record.upstream_time += delay
                continue
            breaker.record_success()
            return value

    def _delay(
        self, config: ModelConfig, error: PuenteError, tries: int, retries: int, deadline: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when there is to be none."""
        if tries > retries:
            return None
        delay = self.backoff.delay(config, tries)
        asked = retry_after(error)
        if asked is not None:
            if asked > config.backoff.max:
                return None  # longer than we would ever wait: fall back, or let the client wait
            delay = max(delay, asked)
        if time.perf_counter() + delay >= deadline:
            return None
        return delay

    # -- what operators see -----------------------------------------------------------------------

    def report(self, config: ModelConfig) -> dict[str, Any]:
        """A model's breaker and queue, for ``/ready``."""
        guard = self.guard(config)
        out: dict[str, Any] = {"breaker": guard.breaker.snapshot()}
        if guard.limiter.limit is not None:
            out["concurrency"] = {
                "in_use": guard.limiter.in_use,
                "limit": guard.limiter.limit,
                "queued": guard.limiter.waiting,
            }
        return out

    def breakers(self) -> list[tuple[str, str, CircuitBreaker]]:
        """(model, endpoint or "", breaker) for every model and every balanced endpoint."""
        if self.catalog is None:
            return []
        out: list[tuple[str, str, CircuitBreaker]] = []
        for config in self.catalog.available():
            out.append((config.name, "", self.guard(config).breaker))
            provider = self.catalog.providers[config.name]
            out.extend((config.name, url, breaker) for url, breaker in provider.endpoint_breakers())
        return out


def _cooling(name: str, breaker: CircuitBreaker) -> ServiceUnavailable:
    wait = breaker.retry_after()
    return ServiceUnavailable(
        f"Model '{name}' is cooling down after repeated upstream failures; "
        f"retry in {max(1, round(wait))} s.",
        retry_after=wait,
        code="model_cooling_down",
    )


class _StateCollector(Collector):
    """Breaker states and queue depths, read when Prometheus scrapes (so a breaker that moved
    from open to half-open by the clock alone is shown as it is)."""

    def __init__(self, resilience: Resilience) -> None:
        self._resilience = resilience

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily(
            "puente_breaker_state",
            'Circuit breaker per model (endpoint="") and per endpoint: 0 closed, 1 half-open, '
            "2 open.",
            labels=["model", "endpoint"],
        )
        for model, endpoint, breaker in self._resilience.breakers():
            states.add_metric([model, endpoint], breaker.state.gauge)
        queued = GaugeMetricFamily(
            "puente_requests_queued",
            "Requests waiting for a concurrency slot of their model.",
            labels=["model"],
        )
        for guard in self._resilience._guards.values():
            if guard.limiter.limit is not None:
                queued.add_metric([guard.config.name], guard.limiter.waiting)
        return [states, queued]
