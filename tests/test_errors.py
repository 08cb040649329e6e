"""Every failure reaches the client as OpenAI's error envelope with the right status."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.support import error_envelope

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def _post(puente: InProcessPuente, content: bytes | str, **kw: Any) -> httpx.Response:
    return httpx.post(
        puente.base_url + "/chat/completions",
        content=content,
        headers={"content-type": "application/json", **kw.pop("headers", {})},
        timeout=10,
        **kw,
    )


def test_malformed_json_is_400(puente: InProcessPuente) -> None:
    response = _post(puente, b'{"model": "fake-model", "messages": [')
    assert response.status_code == 400
    assert error_envelope(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "fake-model"}, "messages"),
        ({"model": "fake-model", "messages": []}, "messages"),
        (
            {"model": "fake-model", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "fake-model", "messages": [{"role": "user", "content": 3}]},
            "messages[0].content",
        ),
        ({"model": "fake-model", "messages": MESSAGES, "temperature": 9}, "temperature"),
        ({"model": "fake-model", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"model": "fake-model", "messages": MESSAGES, "stream": "yes"}, "stream"),
        (
            {"model": "fake-model", "messages": MESSAGES, "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
    ],
)
def test_schema_violation_is_400_naming_the_param(
    puente: InProcessPuente, fake: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(puente.base_url + "/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    assert error_envelope(response)["param"] == param
    assert fake.state.received == []


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert "no-such-model" in caught.value.message


def test_model_with_unset_key_says_which_variable(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="needs-key", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert "PUENTE_TEST_UNSET_KEY" in caught.value.message
    ids = [m.id for m in client.models.list()]
    assert "needs-key" not in ids


def test_body_over_limit_is_413(puente: InProcessPuente, fake: FakeOpenAI) -> None:
    big = "x" * 250_000
    response = httpx.post(
        puente.base_url + "/chat/completions",
        timeout=10,
        json={"model": "fake-model", "messages": [{"role": "user", "content": big}]},
    )
    assert response.status_code == 413
    assert error_envelope(response)["code"] == "request_too_large"

    def chunks() -> Any:  # no Content-Length: the limit holds while reading, too
        for _ in range(30):
            yield b"x" * 10_000

    response = httpx.post(puente.base_url + "/chat/completions", content=chunks(), timeout=10)
    assert response.status_code == 413
    assert fake.state.received == []


@pytest.mark.parametrize("encoding", ["gzip", "br", "x-custom"])
def test_compressed_body_is_415_not_a_parse_error(
    puente: InProcessPuente, fake: FakeOpenAI, encoding: str
) -> None:
    body = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(
        puente.base_url + "/chat/completions",
        content=gzip.compress(body),
        headers={"content-type": "application/json", "content-encoding": encoding},
        timeout=10,
    )
    assert response.status_code == 415
    error = error_envelope(response)
    assert error["code"] == "unsupported_content_encoding"
    assert encoding in error["message"] and "uncompressed" in error["message"]
    assert fake.state.received == []
    # "identity" is no compression: the body is read as sent.
    plain = httpx.post(
        puente.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "identity"},
        timeout=10,
    )
    assert plain.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "exc", "retry_after"),
    [
        (400, openai.BadRequestError, None),
        # Not 401: a refused upstream credential is Puente's 502 (tests/test_hardening_upstream.py)
        (404, openai.NotFoundError, None),
        (429, openai.RateLimitError, "7"),
    ],
)
def test_upstream_4xx_passes_through(
    client: openai.OpenAI,
    direct: openai.OpenAI,
    status: int,
    exc: type[openai.APIStatusError],
    retry_after: str | None,
    stream: bool,
) -> None:
    with pytest.raises(exc) as caught:
        client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=stream,
            extra_body={"fake": {"status": status}},
        )
    assert caught.value.status_code == status
    assert caught.value.response.headers.get("retry-after") == retry_after
    with pytest.raises(exc) as straight:
        direct.chat.completions.create(
            model="fake-model", messages=MESSAGES, extra_body={"fake": {"status": status}}
        )
    assert caught.value.body == straight.value.body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "fault", "status", "code"),
    [
        ("fake-model", {"status": 500}, 502, None),
        ("fake-model", {"status": 503}, 502, None),
        ("fake-model", {"malformed": True}, 502, "upstream_bad_response"),
        ("refused", {}, 502, "upstream_unreachable"),
        ("slow", {"hang": 2}, 504, "upstream_timeout"),
    ],
    ids=["500", "503", "malformed", "refused", "timeout"],
)
def test_upstream_failure_before_the_answer_keeps_its_status(
    puente: InProcessPuente,
    fake: FakeOpenAI,
    model: str,
    fault: dict[str, Any],
    status: int,
    code: str | None,
    stream: bool,
) -> None:
    response = httpx.post(
        puente.base_url + "/chat/completions",
        timeout=10,
        json={"model": model, "messages": MESSAGES, "stream": stream, "fake": fault},
    )
    assert response.status_code == status
    error = error_envelope(response)
    if code is not None:
        assert error["code"] == code
    assert response.headers["content-type"].startswith("application/json")


def test_failure_after_stream_began_is_an_sse_error_event_then_done(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    with httpx.stream(
        "POST",
        puente.base_url + "/chat/completions",
        timeout=10,
        json={
            "model": "fake-model",
            "messages": MESSAGES,
            "stream": True,
            "fake": {"fail_after": 3},
        },
    ) as response:
        assert response.status_code == 200
        frames = response.read().decode().split("\n\n")
    assert frames[-1] == ""
    assert frames[-2] == "data: [DONE]"
    assert frames[-3].startswith('event: error\ndata: {"error":')
    assert all(f.startswith("data: {") for f in frames[:3])

    received = []
    with pytest.raises(openai.APIError, match="KV cache"):
        for chunk in client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=True,
            extra_body={"fake": {"fail_after": 3}},
        ):
            received.append(chunk)
    assert len(received) == 3


@pytest.mark.parametrize("fault", [{"reset_after": 2}, {"no_done": True}])
def test_stream_cut_by_the_upstream_ends_with_an_error_event(
    puente: InProcessPuente, fake: FakeOpenAI, fault: dict[str, Any]
) -> None:
    with httpx.stream(
        "POST",
        puente.base_url + "/chat/completions",
        timeout=10,
        json={"model": "fake-model", "messages": MESSAGES, "stream": True, "fake": fault},
    ) as response:
        text = response.read().decode()
    assert response.status_code == 200
    assert text.endswith("data: [DONE]\n\n")
    assert "event: error" in text


def test_unknown_route_and_method_are_enveloped(puente: InProcessPuente) -> None:
    response = httpx.get(puente.url + "/v1/nothing-here")
    assert response.status_code == 404
    error_envelope(response)
    response = httpx.get(puente.base_url + "/chat/completions")
    assert response.status_code == 405
    error_envelope(response)


def test_server_keeps_serving_after_failures(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    # Failures of every kind first (a bad body, a dead upstream, an upstream error, a broken
    # stream), then an ordinary request on the same server.
    assert _post(puente, b"{not json").status_code == 400
    with pytest.raises(openai.APIError):
        client.chat.completions.create(model="refused", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="fake-model", messages=MESSAGES, extra_body={"fake": {"status": 500}}
        )
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=True,
            extra_body={"fake": {"fail_after": 1}},
        ):
            pass
    answer = client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello! You said: hello"
