"""Each fault an upstream really has, one model, no fallback: what the client sees, how many
upstream attempts were made, that no upstream connection is left open, and that Puente keeps
serving afterwards (tests/fakes/faults.py injects the faults; tests/resilience_support.py has the
configuration)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.faults import FaultyOpenAI
from tests.resilience_support import contents, metric, settled, sse_events
from tests.support import PuenteProcess, error_envelope

MESSAGES = [{"role": "user", "content": "hola"}]
REPLY = "Hello! You said: hola"


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _post(
    puente: PuenteProcess, model: str, fault: dict[str, Any], *, stream: bool = False
) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": stream, "fake": fault}
    return httpx.post(puente.base_url + "/chat/completions", json=body, timeout=20)


def _still_serving(sdk: openai.OpenAI, faulty: FaultyOpenAI, model: str) -> None:
    settled(faulty)
    answer = sdk.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == REPLY
    settled(faulty)


def _answered(response: httpx.Response, model: str, stream: bool) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-puente-model"] == model
    if stream:
        events = sse_events(response.text)
        assert events[-1] == "data: [DONE]"
        assert not any(e.startswith("event: error") for e in events)
        assert contents(events) == REPLY
    else:
        assert response.json()["choices"][0]["message"]["content"] == REPLY
        assert response.json()["model"] == model


# -- retried until it answers -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_transient_5xx_is_retried_until_it_answers(
    resilient: PuenteProcess,
    faulty: FaultyOpenAI,
    resilient_sdk: openai.OpenAI,
    status: int,
    stream: bool,
) -> None:
    tag = _tag()
    retried = metric(resilient.url, "puente_retries_total", model="flaky")
    response = _post(
        resilient, "flaky", {"tag": tag, "status": status, "fail_first": 2}, stream=stream
    )
    _answered(response, "flaky", stream)
    assert faulty.attempts(tag) == 3
    assert metric(resilient.url, "puente_retries_total", model="flaky") == retried + 2
    _still_serving(resilient_sdk, faulty, "flaky")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_reset_before_headers_is_retried(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI, stream: bool
) -> None:
    tag = _tag()
    fault = {"tag": tag, "reset": "before_headers", "fail_first": 1}
    _answered(_post(resilient, "flaky", fault, stream=stream), "flaky", stream)
    assert faulty.attempts(tag) == 2
    _still_serving(resilient_sdk, faulty, "flaky")


def test_429_with_a_short_retry_after_is_waited_for(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    started = time.monotonic()
    fault = {"tag": tag, "status": 429, "retry_after": 1, "fail_first": 1}
    _answered(_post(resilient, "flaky", fault), "flaky", False)
    assert time.monotonic() - started >= 1.0  # not sooner than the upstream asked
    assert faulty.attempts(tag) == 2
    _still_serving(resilient_sdk, faulty, "flaky")


# -- given up on: the client sees the upstream's failure ------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_persistent_529_exhausts_the_retries_then_502(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI, stream: bool
) -> None:
    tag = _tag()
    response = _post(resilient, "flaky", {"tag": tag, "status": 529}, stream=stream)
    assert response.status_code == 502
    assert error_envelope(response)["type"] == "upstream_error"
    assert faulty.attempts(tag) == 3  # the first and two retries
    _still_serving(resilient_sdk, faulty, "flaky")


def test_429_with_a_long_retry_after_goes_to_the_client(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    started = time.monotonic()
    response = _post(resilient, "flaky", {"tag": tag, "status": 429, "retry_after": 30})
    assert time.monotonic() - started < 10  # not the 30 s the upstream asked for
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert error_envelope(response)["code"] == "rate_limit_exceeded"
    assert faulty.attempts(tag) == 1
    _still_serving(resilient_sdk, faulty, "flaky")


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_never_retried(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI, status: int
) -> None:
    tag = _tag()
    response = _post(resilient, "flaky", {"tag": tag, "status": status})
    # A 401 refused Puente's credentials, not the client's: 502 (tests/test_hardening_secrets.py).
    assert response.status_code == (502 if status == 401 else status)
    error_envelope(response)
    assert faulty.attempts(tag) == 1
    _still_serving(resilient_sdk, faulty, "flaky")


def test_reset_before_headers_every_time_is_502_unreachable(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "one-shot", {"tag": tag, "reset": "before_headers"})
    assert response.status_code == 502
    assert error_envelope(response)["code"] == "upstream_unreachable"
    assert faulty.attempts(tag) == 1  # retries: 0
    _still_serving(resilient_sdk, faulty, "one-shot")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_hanging_upstream_times_out_and_is_retried_once(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI, stream: bool
) -> None:
    tag = _tag()
    started = time.monotonic()
    response = _post(resilient, "hanging", {"tag": tag, "hang": 10}, stream=stream)
    assert response.status_code == 504
    assert error_envelope(response)["code"] == "upstream_timeout"
    # Two read timeouts of 0.3 s and a backoff, not the 10 s hang (twice).
    assert time.monotonic() - started < 8
    assert faulty.attempts(tag) == 2
    _still_serving(resilient_sdk, faulty, "hanging")
    assert len(faulty.state.closed) == 2  # each hanging attempt saw its connection closed


def test_malformed_json_is_502_and_not_retried(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "flaky", {"tag": tag, "malformed": True})
    assert response.status_code == 502
    assert error_envelope(response)["code"] == "upstream_bad_response"
    assert faulty.attempts(tag) == 1  # the same upstream would say the same again
    _still_serving(resilient_sdk, faulty, "flaky")


def test_a_trickle_past_the_total_timeout_is_504(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "bounded", {"tag": tag, "trickle": 0.1, "piece": 4})
    assert response.status_code == 504
    assert error_envelope(response)["code"] == "upstream_timeout"
    assert faulty.attempts(tag) == 1
    _still_serving(resilient_sdk, faulty, "bounded")


# -- after the first byte: never retried, the stream ends with an error event -------------------


def _partial_then_error(response: httpx.Response) -> tuple[list[str], dict[str, Any]]:
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "data: [DONE]"
    assert events[-2].startswith("event: error\ndata: ")
    error: dict[str, Any] = httpx.Response(200, content=events[-2].split("data: ", 1)[1]).json()
    return events[:-2], error["error"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"reset_after": 3}, "upstream_unreachable"),
        ({"fail_after": 3}, None),
        ({"malformed_sse": 3}, "upstream_bad_response"),
    ],
    ids=["reset", "error-event", "malformed-sse"],
)
def test_a_stream_failing_midway_is_partial_then_an_error_event(
    resilient: PuenteProcess,
    faulty: FaultyOpenAI,
    resilient_sdk: openai.OpenAI,
    fault: dict[str, Any],
    code: str | None,
) -> None:
    tag = _tag()
    response = _post(resilient, "flaky", {"tag": tag, **fault}, stream=True)
    chunks, error = _partial_then_error(response)
    assert len(chunks) == 3
    assert all(c.startswith("data: {") for c in chunks)
    assert contents(chunks) == "Hello! You"
    if code is not None:
        assert error["code"] == code
    assert faulty.attempts(tag) == 1  # bytes had reached the client: not retried
    _still_serving(resilient_sdk, faulty, "flaky")


def test_the_sdk_sees_a_midway_failure_as_an_error(
    resilient_sdk: openai.OpenAI, faulty: FaultyOpenAI
) -> None:
    received = []
    with pytest.raises(openai.APIError):
        for chunk in resilient_sdk.chat.completions.create(
            model="flaky",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_body={"fake": {"malformed_sse": 3}},
        ):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "".join(r or "" for r in received) == "Hello! You"
    _still_serving(resilient_sdk, faulty, "flaky")


def test_a_trickled_stream_arrives_whole(
    resilient: PuenteProcess, faulty: FaultyOpenAI, resilient_sdk: openai.OpenAI
) -> None:
    tag = _tag()
    response = _post(resilient, "flaky", {"tag": tag, "trickle": 0.001, "piece": 5}, stream=True)
    _answered(response, "flaky", True)
    assert faulty.attempts(tag) == 1
    _still_serving(resilient_sdk, faulty, "flaky")
