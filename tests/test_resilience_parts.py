"""The parts of resilience whose edges are easier to reach directly than through a running server:
the breaker's clock, the queue's hand-over on cancellation, Retry-After and context-length
recognition, and the configuration checks."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from server.config import ConfigError, ModelConfig, parse_config
from server.errors import RateLimited, UpstreamStatusError
from server.resilience.breaker import BreakerState, CircuitBreaker
from server.resilience.chain import Backoff, is_context_length, retry_after
from server.resilience.concurrency import ConcurrencyLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    breaker.record_failure("upstream_status")
    breaker.record_failure("upstream_status")
    breaker.record_success()  # not consecutive any more
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure("timeout")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.available()
    assert breaker.snapshot() == {"state": "open", "retry_in": 10.0, "last_error": "timeout"}

    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_failure("timeout")  # the probe failed: another full cooldown
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == 10

    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot() == {"state": "closed"}


def test_a_probe_that_never_reports_back_frees_its_slot_after_a_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # its request is then cancelled: no success, no failure
    clock.now += 4
    assert not breaker.available()
    clock.now += 1
    assert breaker.allow()


async def test_the_queue_hands_slots_over_in_order_and_survives_cancellation() -> None:
    limiter = ConcurrencyLimiter("m", limit=1, queue=2, queue_timeout=5)
    first = await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire())
    kept = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire()
    assert refused.value.headers == {"Retry-After": "1"}

    gone.cancel()  # a client that left while queued
    await asyncio.gather(gone, return_exceptions=True)
    assert limiter.waiting == 1
    first.release()
    lease = await asyncio.wait_for(kept, 1)
    assert limiter.in_use == 1
    lease.release()
    lease.release()  # idempotent
    assert limiter.in_use == 0


async def test_a_queued_request_waits_no_longer_than_the_queue_timeout() -> None:
    limiter = ConcurrencyLimiter("m", limit=1, queue=1, queue_timeout=0.05)
    held = await limiter.acquire()
    with pytest.raises(RateLimited, match="in time"):
        await limiter.acquire()
    assert limiter.waiting == 0
    held.release()
    assert limiter.in_use == 0


def _status(status: int, message: str, **headers: str) -> UpstreamStatusError:
    return UpstreamStatusError(status, message, headers=headers)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after(_status(429, "slow down", **{"Retry-After": "7"})) == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (retry_after(_status(503, "busy", **{"Retry-After": later})) or 0) <= 30
    assert retry_after(_status(503, "busy", **{"Retry-After": "soon"})) is None
    assert retry_after(_status(503, "busy")) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("This model's maximum context length is 2048 tokens. However, you requested 3000", True),
        ("prompt is too long: 210000 tokens > 200000 maximum", True),
        ("The input token count exceeds the maximum number of tokens allowed", True),
        ("Invalid 'messages': bad role.", False),
    ],
)
def test_context_length_errors_are_recognised_across_vendors(message: str, expected: bool) -> None:
    assert is_context_length(_status(400, message)) is expected
    assert not is_context_length(_status(500, message))  # a server fault is not the prompt's


def test_backoff_grows_with_jitter_and_stays_under_its_cap() -> None:
    config = ModelConfig.model_validate(
        {"name": "m", "provider": "openai", "backoff": {"base": 0.5, "max": 3}}
    )
    backoff = Backoff(random.Random(1))
    for retry, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [backoff.delay(config, retry) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1


def test_fallbacks_must_name_configured_models() -> None:
    text = """
models:
  - {name: a, provider: openai, fallbacks: [b, "vendor/x"]}
  - {name: b, provider: openai}
  - {name: vendor/*, provider: openai}
"""
    config = parse_config(text, "puente.yaml", environ={})
    assert config.models[0].fallbacks == ["b", "vendor/x"]
    with pytest.raises(ConfigError, match="falls back to 'c', which is not configured"):
        parse_config(text.replace("[b,", "[c,"), "puente.yaml", environ={})
