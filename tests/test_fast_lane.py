"""The front doors' POSTs skip FastAPI's router (server/api/fast_lane.py) and answer exactly as
before: still in the OpenAPI document, other methods and paths still FastAPI's, and even a bug
outside a door's own error handling answered in the caller's envelope, never a bare 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from server.api.fast_lane import FastLane
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

DOORS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
)


@pytest.fixture(scope="module")
def puente(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("fast-lane")
    with InProcessPuente(gateway_config(fake_upstream), workdir) as server:
        yield server


def test_every_front_door_is_in_the_lane_and_in_the_openapi_document(
    puente: InProcessPuente,
) -> None:
    lane = [m for m in puente._app.user_middleware if m.cls is FastLane]
    assert len(lane) == 1
    assert sorted(lane[0].kwargs["lanes"]) == sorted(DOORS)
    paths = httpx.get(puente.url + "/openapi.json").json()["paths"]
    assert all("post" in paths[door] for door in DOORS)


def test_other_methods_and_paths_are_answered_as_before(puente: InProcessPuente) -> None:
    wrong = httpx.get(puente.base_url + "/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["message"] == "GET is not allowed on /v1/chat/completions."
    nowhere = httpx.post(puente.base_url + "/chat/completionz", json={})
    assert nowhere.status_code == 404 and "error" in nowhere.json()


def test_a_bug_outside_a_doors_handling_is_a_500_in_the_callers_envelope(
    puente: InProcessPuente, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(headers: Any) -> Any:
        raise RuntimeError("a bug, with a secret sk-do-not-show")

    monkeypatch.setattr(puente.runtime.access, "authenticate", broken)
    client = openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0)
    with client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body == {  # OpenAI's envelope, its "error" object
        "message": "The server had an error processing your request.",
        "type": "internal_error",
        "param": None,
        "code": None,
    }
    claude = anthropic.Anthropic(base_url=puente.url, api_key="unused", max_retries=0)
    with claude, pytest.raises(anthropic.InternalServerError) as refused:
        claude.messages.create(
            model="fake-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert "sk-do-not-show" not in refused.value.response.text
    assert "unhandled error on POST /v1/chat/completions" in puente.logs()


def _overhead_sum(puente: InProcessPuente) -> float:
    text = httpx.get(puente.url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("puente_gateway_overhead_seconds_sum{")
    )


def test_the_overhead_metric_counts_from_when_the_request_was_handed_over(
    puente: InProcessPuente, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = puente.runtime.access
    authenticate = access.authenticate

    async def slow(headers: Any) -> Any:
        await asyncio.sleep(0.3)  # what happens before the request reaches the pipeline
        return await authenticate(headers)

    monkeypatch.setattr(access, "authenticate", slow)
    before = _overhead_sum(puente)
    with openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0) as client:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert _overhead_sum(puente) - before >= 0.3


def test_a_doors_post_skips_the_outer_layers_and_keeps_what_puentes_own_do(
    puente: InProcessPuente, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = puente._app
    stack = app.middleware_stack
    assert stack is not None  # built at startup
    entered: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await stack(scope, receive, send)

    monkeypatch.setattr(app, "middleware_stack", counting)
    headers = {"X-Request-Id": "lane-check-1"}
    with httpx.Client(base_url=puente.base_url, headers=headers) as client:
        answer = client.post(
            "/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.status_code == 200
        assert answer.headers["x-request-id"] == "lane-check-1"  # the request-id middleware
        too_big = client.post("/chat/completions", content=b"x" * (2**21))
        assert too_big.status_code == 413  # the body limit, in OpenAI's envelope
        assert too_big.json()["error"]["code"] == "request_too_large"
        assert client.get("/models").status_code == 200
    assert entered == ["/v1/models"]  # only what is not a door's POST took the whole stack
