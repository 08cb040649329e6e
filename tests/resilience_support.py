"""What the fault-injection tests share: the configuration Puente runs with in front of the faulty
fakes, and ways to look at a running Puente from outside (its fds, metrics, SSE frames)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.faults import FaultyOpenAI
from tests.support import free_port

FAST = {"base": 0.01, "max": 2.0}
NEVER_TRIPS = {"failures": 1_000_000}


def _model(name: str, fake: FaultyOpenAI, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai_compatible",
        "base_url": fake.base_url,
        "model": f"{name}-up",
        "backoff": FAST,
        "breaker": NEVER_TRIPS,
        **settings,
    }


def fault_config(fake: FaultyOpenAI, broken: FaultyOpenAI) -> dict[str, Any]:
    """Models named for what they are for; each upstream model is ``<name>-up``, so the fake can
    tell (and count) a primary from its fallback."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return {
        # ready_cache 0: these tests read each breaker's state right after they moved it.
        "server": {"drain_timeout": 5, "ready_cache": 0},
        "auth": "none",  # an admin key may be set for /ready's detail; clients need none
        "models": [
            _model("flaky", fake, retries=2),
            _model("one-shot", fake, retries=0),
            _model("hanging", fake, retries=1, timeouts={"connect": 2, "read": 0.3}),
            _model("bounded", fake, retries=0, timeouts={"connect": 2, "total": 1.0}),
            _model("primary", fake, retries=1, fallbacks=["steady"]),
            _model("ctx-primary", fake, fallbacks=["steady"], fallback_on_context_length=True),
            _model("ctx-strict", fake, fallbacks=["steady"]),
            _model("chain", fake, retries=0, fallbacks=["dead-end", "steady"]),
            {**_model("dead-end", fake, retries=0), "base_url": dead},
            _model("steady", fake),
            _model(
                "tripping",
                fake,
                retries=0,
                fallbacks=["steady"],
                breaker={"failures": 2, "cooldown": 1.0},
            ),
            _model("lonely", fake, retries=2, breaker={"failures": 2, "cooldown": 30}),
            _model("capped", fake, max_concurrency=2, max_queue=1, queue_timeout=0.6),
            {
                **_model("replicas", fake, retries=2, breaker={"failures": 2, "cooldown": 30}),
                "base_url": None,
                "endpoints": [broken.base_url, fake.base_url],
            },
        ],
        # A persona's own fallbacks replace its model's (one-shot has none).
        "personas": [
            {
                "name": "guia",
                "model": "one-shot",
                "system": "Eres un guía.",
                "fallbacks": ["steady"],
            }
        ],
    }


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def settled(fake: FaultyOpenAI) -> None:
    """No upstream answer still running and no upstream connection left open."""
    wait_until(
        lambda: fake.busy() == 0 and fake.open_connections() == 0,
        what=f"upstream to settle (busy={fake.busy()}, open={fake.open_connections()})",
    )


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(base_url: str, name: str, **labels: str) -> float:
    """The value of one sample of Puente's ``/metrics`` (0 when it is not there yet)."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def sse_events(text: str) -> list[str]:
    """The events of an SSE body, without the blank lines between them."""
    return [event for event in text.split("\n\n") if event]


def contents(events: list[str]) -> str:
    """The text the ``data:`` chunks of a stream carry."""
    out = []
    for event in events:
        if event.startswith("data: {"):
            for choice in orjson.loads(event[6:]).get("choices", []):
                out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)
