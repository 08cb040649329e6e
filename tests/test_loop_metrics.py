"""The lock-free series (``server/observability/loop_metrics.py``) expose exactly what
prometheus_client's own Counter and Histogram expose after the same requests: names, help, types,
labels, buckets, ``_created`` samples and values."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import server.access.metrics as access_metrics
import server.observability.metrics as observability_metrics
from server.access.metrics import AccessMetrics
from server.observability.loop_metrics import LoopCounter, LoopHistogram
from server.observability.metrics import Metrics
from tests.access_support import ADMIN, USER, create_key, eventually, unique, usage
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

# On a bound, between bounds, below the first, above the last, zero and infinity: every way
# ``observe``'s loop and ``record``'s bisection could pick different buckets.
AMOUNTS = (0.0, 0.00005, 0.0001, 0.00012, 0.005, 0.0051, 0.7, 1.0, 59.9, 60.0, 299.0, 1e6)
AMOUNTS += (float("inf"),)


def _exposition(registry: CollectorRegistry) -> str:
    # ``_created`` is a timestamp of when each child was made: its presence must match, not it.
    text = generate_latest(registry).decode()
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)


def _requests(metrics: Metrics, access: AccessMetrics, *, hot_path: bool) -> None:
    for model, provider in (("m1", "openai_compatible"), ("m2", "vllm")):
        for status in ("200", "429", "499"):
            child = metrics.requests.labels(model, provider, status)
            key = access.requests.labels("k", model, status)
            for _ in range(3):
                if hot_path:
                    assert isinstance(child, LoopCounter) and isinstance(key, LoopCounter)
                    child.add()
                    key.add()
                else:
                    child.inc()
                    key.inc()
        tokens = (
            metrics.prompt_tokens.labels(model, provider),
            metrics.output_tokens.labels(model, provider),
            access.tokens.labels("k", model, "prompt"),
        )
        for counter in tokens:
            if hot_path:
                assert isinstance(counter, LoopCounter)
                counter.add(7)
            else:
                counter.inc(7)
        metrics.upstream_errors.labels(model, provider, "timeout").inc()
        histograms = (
            metrics.duration.labels(model, provider),
            metrics.ttft.labels(model, provider),
            metrics.overhead.labels(model, provider),
        )
        for histogram in histograms:
            for amount in AMOUNTS:
                if hot_path:
                    assert isinstance(histogram, LoopHistogram)
                    histogram.record(amount)
                else:
                    histogram.observe(amount)


def test_the_exposition_is_prometheus_clients_own(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_registry = CollectorRegistry()
    loop = Metrics(loop_registry), AccessMetrics(loop_registry)
    _requests(*loop, hot_path=True)

    # The same metrics built from prometheus_client's own classes, changed through their API.
    monkeypatch.setattr(observability_metrics, "LoopCounter", Counter)
    monkeypatch.setattr(observability_metrics, "LoopHistogram", Histogram)
    monkeypatch.setattr(access_metrics, "LoopCounter", Counter)
    stock_registry = CollectorRegistry()
    stock = Metrics(stock_registry), AccessMetrics(stock_registry)
    assert not isinstance(stock[0].requests, LoopCounter)
    _requests(*stock, hot_path=False)

    loop_text, stock_text = _exposition(loop_registry), _exposition(stock_registry)
    assert 'puente_gateway_overhead_seconds_bucket{le="0.0001",model="m1"' in loop_text
    assert "puente_requests_total{" in loop_text and "_created{" in loop_text
    assert loop_text == stock_text


def test_the_public_api_still_counts_and_checks() -> None:
    """``inc`` / ``observe`` / ``set`` on the lock-free classes behave as prometheus_client's."""
    registry = CollectorRegistry()
    counter = LoopCounter("c_total", "c", ["a"], registry=registry)
    histogram = LoopHistogram("h_seconds", "h", ["a"], buckets=(1, 2), registry=registry)
    with pytest.raises(ValueError, match="missing label values"):
        counter.inc()  # no labels: not observable, as before
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    counter.labels("x").inc(2)
    counter.labels("x").reset()
    counter.labels("x").inc(0.5)
    histogram.labels("x").observe(1.5)
    assert registry.get_sample_value("c_total", {"a": "x"}) == 0.5
    assert registry.get_sample_value("h_seconds_bucket", {"a": "x", "le": "1.0"}) == 0.0
    assert registry.get_sample_value("h_seconds_bucket", {"a": "x", "le": "2.0"}) == 1.0
    assert registry.get_sample_value("h_seconds_sum", {"a": "x"}) == 1.5


def test_requests_count_on_the_event_loop_thread_only(fake: FakeOpenAI, tmp_path: Path) -> None:
    """The lock is gone because one thread changes these series: the event loop's. Every
    change made while real requests are served (a key with limits, usage rows written by the
    SQLite threads) is checked to come from the thread that runs the app."""
    threads: set[int] = set()
    add, record = LoopCounter.add, LoopHistogram.record

    def counting_add(self: LoopCounter, amount: float = 1) -> None:
        threads.add(threading.get_ident())
        add(self, amount)

    def counting_record(self: LoopHistogram, amount: float) -> None:
        threads.add(threading.get_ident())
        record(self, amount)

    env = {"PUENTE_ADMIN_KEY": ADMIN}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LoopCounter, "add", counting_add)
        patch.setattr(LoopHistogram, "record", counting_record)
        with InProcessPuente(gateway_config(fake), tmp_path, env=env) as puente:
            name = unique("loop")
            secret = create_key(puente, name, rpm=1000, tpm=1_000_000, budget_day=1_000_000)
            with openai.OpenAI(base_url=puente.base_url, api_key=secret, max_retries=0) as client:
                for _ in range(5):
                    client.chat.completions.create(model="fake-model", messages=USER)
            eventually(lambda: len(usage(puente, key=name)) > 0, what="usage rows written")
            text = httpx.get(puente.url + "/metrics", timeout=10).text
            assert puente._thread is not None
            loop_thread = puente._thread.ident
    assert threads == {loop_thread}
    assert f'puente_key_requests_total{{key="{name}",model="fake-model",status="200"}} 5.0' in text
