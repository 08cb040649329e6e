"""Models, health, readiness, metrics and request ids, as a client and a scraper see them."""

from __future__ import annotations

import subprocess

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


def test_models_list_and_get(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"fake-model", "alias", "slow", "refused", "two-endpoints"} <= set(models)
    assert "needs-key" not in models
    assert "vendor/*" not in models
    assert all(m.object == "model" and m.created > 0 for m in models.values())
    alias = client.models.retrieve("alias")
    assert alias.id == "alias"
    assert alias.model_extra == {
        "description": "the fake under another name",
        "endpoints": [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1/completions",
        ],
    }
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError, match="PUENTE_TEST_UNSET_KEY"):
        client.models.retrieve("needs-key")


def test_health_is_up(puente: InProcessPuente) -> None:
    response = httpx.get(puente.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_says_which_upstream_is_not_reachable(puente: InProcessPuente) -> None:
    # No entry here is required for readiness (none is a local engine): the instance stays in
    # its load balancer while one upstream is down, and /ready shows which.
    response = httpx.get(puente.url + "/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["models"]["refused"] == {
        "state": "down",
        "required": False,
        "breaker": body["models"]["refused"]["breaker"],
    }
    assert body["models"]["fake-model"]["state"] == "ready"
    assert body["models"]["two-endpoints"]["state"] == "ready"


def test_ready_is_200_when_every_upstream_answers(
    fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = {"models": [{"name": "m", "provider": "openai_compatible", "base_url": fake.base_url}]}
    with InProcessPuente(config, tmp_path_factory.mktemp("ready")) as proc:
        response = httpx.get(proc.url + "/ready")
        assert response.status_code == 200
        assert response.json()["models"]["m"]["state"] == "ready"


def test_request_id_is_echoed_and_logged(puente: InProcessPuente, client: openai.OpenAI) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-Id": "my-trace-42"},
    )
    assert response.headers["x-request-id"] == "my-trace-42"
    generated = httpx.get(puente.url + "/health").headers["x-request-id"]
    assert len(generated) == 32
    error = httpx.post(
        puente.base_url + "/chat/completions", content=b"{", headers={"X-Request-Id": "bad-body-7"}
    )
    assert error.headers["x-request-id"] == "bad-body-7"
    assert "[my-trace-42] chat model=fake-model" in puente.logs()


def test_request_id_reaches_the_upstream(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Request-Id": "upstream-sees-me"},
    )
    assert fake.state.headers[-1]["x-request-id"] == "upstream-sees-me"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tokens_and_errors(
    puente: InProcessPuente, client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    before = httpx.get(puente.url + "/metrics").text
    client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "a b"}])
    list(
        client.chat.completions.create(
            model="alias", stream=True, messages=[{"role": "user", "content": "a b"}]
        )
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="alias",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"fake": {"status": 500}},
        )
    after = httpx.get(puente.url + "/metrics").text
    labels = {"model": "alias", "provider": "openai_compatible"}

    def delta(name: str, **extra: str) -> float:
        return _metric(after, name, **labels, **extra) - _metric(before, name, **labels, **extra)

    assert delta("puente_requests_total", status="200") == 2
    assert delta("puente_requests_total", status="502") == 1
    assert delta("puente_output_tokens_total") == 10  # "Hello! You said: a b" twice
    assert delta("puente_upstream_errors_total", kind="upstream_status") == 1
    assert delta("puente_request_duration_seconds_count") == 3
    assert delta("puente_time_to_first_token_seconds_count") == 1
    assert delta("puente_gateway_overhead_seconds_count") == 2
    assert _metric(after, "puente_requests_in_flight", model="alias") == 0


def test_curl_streams_sse_frames(puente: InProcessPuente) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sN",
            puente.base_url + "/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"model":"fake-model","stream":true,"messages":[{"role":"user","content":"hola"}]}',
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    frames = out.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    assert all(f.startswith("data: {") for f in frames[:-2])
    assert '"content":" hola"' in out
