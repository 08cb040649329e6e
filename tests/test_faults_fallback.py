"""Beyond one model: fallbacks to another model, circuit breakers (cooldowns with half-open
probing) for models and replicas, and the per-model concurrency cap."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from server.config import ConfigError, parse_config
from tests.fakes.faults import FaultyOpenAI
from tests.fault_fixtures import ADMIN_KEY
from tests.resilience_support import contents, metric, settled, sse_events
from tests.support import PuenteProcess

MESSAGES = [{"role": "user", "content": "hola"}]
REPLY = "Hello! You said: hola"


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _post(
    puente: PuenteProcess, model: str, fault: dict[str, Any] | None = None, *, stream: bool = False
) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": stream, "fake": fault or {}}
    return httpx.post(puente.base_url + "/chat/completions", json=body, timeout=20)


def _ready(puente: PuenteProcess) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}  # endpoint detail is the admin's
    body: dict[str, Any] = httpx.get(puente.url + "/ready", headers=admin, timeout=10).json()
    return body


# -- fallbacks ----------------------------------------------------------------------------------


def test_a_failing_model_falls_back_and_the_answer_says_who_answered(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    before = metric(resilient.url, "puente_fallbacks_total", **{"from": "primary", "to": "steady"})
    raw = resilient_sdk.chat.completions.with_raw_response.create(
        model="primary",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"fake": {"tag": tag, "status": 503, "only_model": "primary-up"}},
    )
    answer = raw.parse()
    assert answer.model == "steady"
    assert raw.headers["x-puente-model"] == "steady"
    assert answer.choices[0].message.content == REPLY
    assert faulty.attempts(tag, "primary-up") == 2  # the first and its one retry
    assert faulty.attempts(tag, "steady-up") == 1
    after = metric(resilient.url, "puente_fallbacks_total", **{"from": "primary", "to": "steady"})
    assert after == before + 1
    settled(faulty)


def test_a_persona_falls_back_with_its_prompt_and_keeps_its_name(
    resilient_sdk: openai.OpenAI, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    raw = resilient_sdk.chat.completions.with_raw_response.create(
        model="guia",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"fake": {"tag": tag, "status": 503, "only_model": "one-shot-up"}},
    )
    answer = raw.parse()
    assert answer.model == "guia"
    assert raw.headers["x-puente-model"] == "steady"
    assert answer.choices[0].message.content == REPLY
    assert faulty.attempts(tag, "one-shot-up") == 1
    assert faulty.attempts(tag, "steady-up") == 1
    sent = faulty.state.received[-1]
    assert sent["model"] == "steady-up"
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("Eres un guía.")
    settled(faulty)


def test_a_persona_fallback_must_be_configured() -> None:
    text = (
        "models:\n  - name: m\n    provider: openai_compatible\n    base_url: http://h/v1\n"
        "personas:\n  - name: p\n    model: m\n    system: s\n    fallbacks: [nope]\n"
    )
    with pytest.raises(ConfigError, match="persona 'p': model 'nope' is not configured"):
        parse_config(text, "inline", {})


def test_a_stream_falls_back_before_its_first_byte(
    resilient_sdk: openai.OpenAI, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    fault = {"tag": tag, "reset": "before_headers", "only_model": "primary-up"}
    with resilient_sdk.chat.completions.with_streaming_response.create(
        model="primary",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_body={"fake": fault},
    ) as raw:
        assert raw.headers["x-puente-model"] == "steady"
        chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"steady"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert faulty.attempts(tag, "primary-up") == 2
    assert faulty.attempts(tag, "steady-up") == 1
    settled(faulty)


def test_the_model_that_answered_is_named_without_a_fallback_too(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    response = _post(resilient, "primary", stream=True)
    assert response.headers["x-puente-model"] == "primary"
    assert contents(sse_events(response.text)) == REPLY
    assert _post(resilient, "primary").headers["x-puente-model"] == "primary"


def test_a_client_error_does_not_fall_back(resilient: PuenteProcess, faulty: FaultyOpenAI) -> None:
    tag = _tag()
    response = _post(resilient, "primary", {"tag": tag, "status": 400, "only_model": "primary-up"})
    assert response.status_code == 400
    assert faulty.attempts(tag, "primary-up") == 1
    assert faulty.attempts(tag, "steady-up") == 0


@pytest.mark.parametrize(
    ("model", "falls_back"), [("ctx-primary", True), ("ctx-strict", False)], ids=["on", "off"]
)
def test_a_context_length_error_falls_back_only_when_configured(
    resilient: PuenteProcess, faulty: FaultyOpenAI, model: str, falls_back: bool
) -> None:
    tag = _tag()
    fault = {"tag": tag, "context_length": True, "only_model": f"{model}-up"}
    response = _post(resilient, model, fault)
    assert faulty.attempts(tag, f"{model}-up") == 1  # a client error: never retried
    if falls_back:
        assert response.status_code == 200
        assert response.json()["model"] == "steady"
        assert faulty.attempts(tag, "steady-up") == 1
    else:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert faulty.attempts(tag, "steady-up") == 0


def test_fallbacks_are_tried_in_order_past_an_unreachable_one(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    hop = {"from": "dead-end", "to": "steady"}
    before = metric(resilient.url, "puente_fallbacks_total", **hop)
    response = _post(resilient, "chain", {"tag": tag, "status": 502, "only_model": "chain-up"})
    assert response.status_code == 200
    assert response.headers["x-puente-model"] == "steady"
    assert metric(resilient.url, "puente_fallbacks_total", **hop) == before + 1
    assert faulty.attempts(tag, "chain-up") == 1
    assert faulty.attempts(tag, "steady-up") == 1


def test_when_every_model_fails_the_client_gets_the_last_error(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "primary", {"tag": tag, "status": 503})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert faulty.attempts(tag, "primary-up") == 2
    assert faulty.attempts(tag, "steady-up") == 3
    settled(faulty)


# -- circuit breakers ---------------------------------------------------------------------------


def test_a_model_that_keeps_failing_cools_down_then_is_probed_back(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    for _ in range(2):  # failures: 2 opens it
        response = _post(
            resilient, "tripping", {"tag": tag, "status": 503, "only_model": "tripping-up"}
        )
        assert response.headers["x-puente-model"] == "steady"
    assert faulty.attempts(tag, "tripping-up") == 2
    assert _ready(resilient)["models"]["tripping"]["breaker"]["state"] == "open"
    gauge = {"model": "tripping", "endpoint": ""}
    assert metric(resilient.url, "puente_breaker_state", **gauge) == 2

    # While it cools down nothing is sent to it, even a request it could answer.
    response = _post(resilient, "tripping", {"tag": tag})
    assert response.headers["x-puente-model"] == "steady"
    assert faulty.attempts(tag, "tripping-up") == 2

    time.sleep(1.1)  # the cooldown: one probe goes through, succeeds, and closes the breaker
    assert metric(resilient.url, "puente_breaker_state", **gauge) == 1
    response = _post(resilient, "tripping", {"tag": tag})
    assert response.headers["x-puente-model"] == "tripping"
    assert faulty.attempts(tag, "tripping-up") == 3
    assert _ready(resilient)["models"]["tripping"]["breaker"] == {"state": "closed"}
    settled(faulty)


def test_an_open_breaker_with_nowhere_else_to_go_costs_one_attempt(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "lonely", {"tag": tag, "status": 500})
    assert response.status_code == 502
    assert faulty.attempts(tag) == 2  # its second failure opened the breaker: no third attempt
    response = _post(resilient, "lonely", {"tag": tag, "status": 500})
    assert response.status_code == 502
    assert faulty.attempts(tag) == 3  # open: one attempt, no retries
    assert _ready(resilient)["models"]["lonely"]["breaker"]["state"] == "open"
    response = _post(resilient, "lonely", {"tag": tag})
    assert response.status_code == 200  # still tried, so a recovery is found at once
    assert _ready(resilient)["models"]["lonely"]["breaker"] == {"state": "closed"}
    settled(faulty)


def test_a_broken_replica_is_taken_out_of_rotation(
    resilient: PuenteProcess, faulty: FaultyOpenAI, broken_upstream: FaultyOpenAI
) -> None:
    for _ in range(12):
        response = _post(resilient, "replicas")
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == REPLY
    # It answered 503 until its breaker opened (failures: 2), then got nothing more.
    assert len(broken_upstream.state.received) == 2
    assert len(faulty.state.received) == 12
    endpoints = _ready(resilient)["models"]["replicas"]["endpoints"]
    assert endpoints[broken_upstream.base_url].startswith("cooling down")
    assert endpoints[faulty.base_url] == "ready"
    gauge = {"model": "replicas", "endpoint": broken_upstream.base_url}
    assert metric(resilient.url, "puente_breaker_state", **gauge) == 2
    settled(faulty)
    settled(broken_upstream)


# -- the concurrency cap ------------------------------------------------------------------------


async def _timed_post(
    client: httpx.AsyncClient, fault: dict[str, Any], stream: bool = False
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    body = {"model": "capped", "messages": MESSAGES, "stream": stream, "fake": fault}
    response = await client.post("/chat/completions", json=body)
    return time.monotonic() - started, response


async def test_past_the_cap_and_its_queue_a_request_gets_429_at_once(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=resilient.base_url, timeout=20) as client:
        busy = [asyncio.create_task(_timed_post(client, {"delay": 0.5})) for _ in range(2)]
        await asyncio.sleep(0.15)  # both slots taken
        queued = asyncio.create_task(_timed_post(client, {"delay": 0.01}))
        await asyncio.sleep(0.1)  # the one queue place taken
        ready = (await client.get(resilient.url + "/ready")).json()
        assert ready["models"]["capped"]["concurrency"] == {"in_use": 2, "limit": 2, "queued": 1}
        _, refused = await _timed_post(client, {})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "model_overloaded"
        # Refused because the queue was full, not after waiting in it.
        assert "as many requests as it may" in refused.json()["error"]["message"]
        for task in [*busy, queued]:
            _, response = await task
            assert response.status_code == 200  # the queued one got a slot when one freed

        # Waiting in the queue is bounded too: queue_timeout 0.6 s.
        busy = [asyncio.create_task(_timed_post(client, {"delay": 1.5})) for _ in range(2)]
        await asyncio.sleep(0.15)
        elapsed, late = await _timed_post(client, {})
        assert late.status_code == 429
        assert "no free slot in time" in late.json()["error"]["message"]
        assert elapsed >= 0.5  # it waited its queue_timeout (the slots stay busy for 1.5 s)
        for task in busy:
            assert (await task)[1].status_code == 200
    settled(faulty)


async def test_a_stream_holds_its_slot_until_it_ends(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=resilient.base_url, timeout=20) as client:
        long = {"delay": 0.05, "reply": " ".join(["palabra"] * 12)}
        streams = [asyncio.create_task(_timed_post(client, long, stream=True)) for _ in range(2)]
        await asyncio.sleep(0.2)
        queued = asyncio.create_task(_timed_post(client, {}))
        await asyncio.sleep(0.05)
        _, refused = await _timed_post(client, {})
        assert refused.status_code == 429
        for task in streams:
            _, response = await task
            assert sse_events(response.text)[-1] == "data: [DONE]"
        assert (await queued)[1].status_code == 200
    assert metric(resilient.url, "puente_requests_queued", model="capped") == 0
    settled(faulty)
