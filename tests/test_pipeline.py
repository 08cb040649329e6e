"""The one request path: every exit finishes the request once, and each attempt has its own request.

The app runs in the test process with in-memory providers (``tests/fakes/provider.py``); the
clients are the real openai SDK and httpx over a real socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.errors import RateLimited, UpstreamStatusError
from tests.fakes.provider import FakeProvider
from tests.inprocess import InProcessPuente
from tests.support import error_envelope

ADMIN_KEY = "admin-key-for-the-pipeline-tests-0123456789"
UNUSED = "http://127.0.0.1:9/v1"  # never called: these entries get an injected provider
MESSAGES: list[Any] = [
    {"role": "system", "content": "Eres breve."},
    {"role": "user", "content": "¿Quién fundó Lima?"},
]


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai_compatible", "base_url": UNUSED, **extra}


PROVIDERS = {
    "crashy": FakeProvider(crash=RuntimeError("a bug in a translator")),
    "crash-mid-stream": FakeProvider("uno dos tres cuatro", crash=KeyError("x"), crash_after=2),
    "folded": FakeProvider(fail=UpstreamStatusError(503, "overloaded")),
    "plain": FakeProvider("Francisco Pizarro, en 1535."),
    "vendor/*": FakeProvider("comodín"),
    "flaky": FakeProvider(fail=UpstreamStatusError(503, "busy")),
    "picky": FakeProvider(fail=UpstreamStatusError(400, "bad temperature")),
    "limited": FakeProvider(fail=RateLimited("slow down", retry_after=2.5)),
    "capped": FakeProvider("corto"),
    "overflowing": FakeProvider(fail=UpstreamStatusError(503, "overloaded")),
}
CONFIG: dict[str, Any] = {
    "auth": "none",
    "models": [
        _entry("crashy", retries=0),
        _entry("crash-mid-stream"),
        _entry("folded", system_role="fold", retries=0, fallbacks=["plain"]),
        _entry("plain"),
        _entry("vendor/*"),
        _entry("flaky", retries=1, backoff={"base": 0, "max": 0}),
        _entry("picky"),
        _entry("limited", retries=0),
        _entry("capped", max_output_tokens=256, max_n=2),
        _entry("overflowing", retries=0, fallbacks=["capped"]),
    ],
}


@pytest.fixture(scope="module")
def puente(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("pipeline")
    env = {"PUENTE_ADMIN_KEY": ADMIN_KEY}
    with InProcessPuente(CONFIG, workdir, providers=PROVIDERS, env=env) as server:
        yield server


@pytest.fixture
def client(puente: InProcessPuente) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=puente.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk


def sample(puente: InProcessPuente, name: str, **labels: str) -> float:
    text = httpx.get(puente.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def label_values(puente: InProcessPuente, name: str, label: str) -> set[str]:
    text = httpx.get(puente.url + "/metrics", timeout=10).text
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and label in s.labels
    }


def usage_rows(puente: InProcessPuente, model: str) -> int:
    response = httpx.get(
        puente.url + "/admin/usage", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    return sum(row["requests"] for row in response.json()["data"] if row["model"] == model)


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    """Waits on a condition, not a clock: the deadline only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_bug_in_a_provider_still_finishes_the_request(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="crashy", messages=MESSAGES)
    response = caught.value.response
    assert response.status_code == 500
    assert error_envelope(httpx.Response(500, headers=response.headers, content=response.content))
    assert response.headers["x-request-id"]
    assert "Traceback" not in response.text and "a bug in a translator" not in response.text
    assert sample(puente, "puente_requests_total", model="crashy", status="500") == 1
    assert sample(puente, "puente_requests_in_flight", model="crashy") == 0
    assert puente.runtime.pipeline.generations.in_flight_before(10**9) == 0
    wait_for(lambda: usage_rows(puente, "crashy") == 1, "the usage row of the failed request")


def test_a_bug_mid_stream_ends_the_stream_and_finishes_the_request(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    received: list[str] = []
    stream = client.chat.completions.create(
        model="crash-mid-stream", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "uno dos"
    assert "processing your request" in caught.value.message
    # The client reads the error event before the server has closed the stream behind it.
    provider = PROVIDERS["crash-mid-stream"]
    wait_for(lambda: provider.closed_streams == 1, "the upstream stream closed")  # type: ignore[attr-defined]
    wait_for(
        lambda: (
            sample(puente, "puente_requests_total", model="crash-mid-stream", status="500") == 1
        ),
        "the request counted",
    )
    assert sample(puente, "puente_requests_in_flight", model="crash-mid-stream") == 0
    assert puente.runtime.pipeline.generations.in_flight_before(10**9) == 0


def test_a_models_fold_does_not_leak_into_its_fallback(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="folded", messages=MESSAGES)
    assert raw.headers["x-puente-model"] == "plain"
    assert raw.parse().choices[0].message.content == "Francisco Pizarro, en 1535."
    folded = PROVIDERS["folded"].received[-1]  # type: ignore[attr-defined]
    assert [m["role"] for m in folded.messages] == ["user"]
    assert folded.messages[0]["content"].startswith("Eres breve.\n\n")
    fallback = PROVIDERS["plain"].received[-1]  # type: ignore[attr-defined]
    assert fallback.messages == MESSAGES  # the client's turns, as sent
    assert fallback.upstream_model == "plain"


def test_metric_labels_are_configured_names_not_client_text(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    for name in ("vendor/a", "vendor/b", "vendor/" + "x" * 200):
        answer = client.chat.completions.create(model=name, messages=MESSAGES)
        assert answer.model == name  # the client still sees the name it asked for
    models = label_values(puente, "puente_requests_total", "model")
    assert "vendor/*" in models
    assert not any(m.startswith("vendor/") and m != "vendor/*" for m in models)
    assert sample(puente, "puente_requests_total", model="vendor/*", status="200") == 3


def test_the_answering_model_header_is_encoded_and_its_memo_stays_bounded(
    puente: InProcessPuente, client: openai.OpenAI
) -> None:
    """``x-puente-model`` is worked out once per name (``front_door._model_header``); a wildcard
    name is the client's text, so it is still percent-encoded, and many names do not grow it."""
    from server.api import front_door

    for name in ("vendor/año niño", "vendor/año niño", "plain"):
        raw = client.chat.completions.with_raw_response.create(model=name, messages=MESSAGES)
        expected = "vendor/a%C3%B1o%20ni%C3%B1o" if name != "plain" else "plain"
        assert raw.headers["x-puente-model"] == expected
    for i in range(front_door._MODEL_HEADERS_MAX + 10):
        raw = client.chat.completions.with_raw_response.create(
            model=f"vendor/n\u00famero-{i}", messages=MESSAGES
        )
        assert raw.headers["x-puente-model"] == f"vendor/n%C3%BAmero-{i}"
    assert len(front_door._MODEL_HEADERS) <= front_door._MODEL_HEADERS_MAX


def test_after_puente_retried_the_sdk_is_told_not_to_retry(puente: InProcessPuente) -> None:
    body = {"model": "flaky", "messages": MESSAGES}
    response = httpx.post(puente.base_url + "/chat/completions", json=body, timeout=10)
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert len(PROVIDERS["flaky"].received) == 2  # type: ignore[attr-defined]
    # A client's own mistake was not retried: nothing to tell.
    response = httpx.post(
        puente.base_url + "/chat/completions", json={**body, "model": "picky"}, timeout=10
    )
    assert response.status_code == 400
    assert "x-should-retry" not in response.headers


def test_retry_after_is_rounded_up_never_down(puente: InProcessPuente) -> None:
    body = {"model": "limited", "messages": MESSAGES}
    response = httpx.post(puente.base_url + "/chat/completions", json=body, timeout=10)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


async def test_async_sdk_streams_through_the_pipeline(puente: InProcessPuente) -> None:
    async with openai.AsyncOpenAI(base_url=puente.base_url, api_key="k", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="plain",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
    assert text == "Francisco Pizarro, en 1535."
    assert usage is not None and usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 2**63), ("max_completion_tokens", 257), ("n", 3)],
)
def test_a_models_caps_refuse_what_is_above_them(
    client: openai.OpenAI, field: str, value: int
) -> None:
    before = len(PROVIDERS["capped"].received)  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="capped", messages=MESSAGES, **{field: value})
    assert caught.value.param == field
    assert "capped" in caught.value.message
    assert len(PROVIDERS["capped"].received) == before  # type: ignore[attr-defined]
    within = client.chat.completions.create(model="capped", messages=MESSAGES, max_tokens=256, n=2)
    assert within.choices[0].message.content == "corto"


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallbacks_caps_hold_for_what_it_is_handed(client: openai.OpenAI, stream: bool) -> None:
    """The requested model's caps are checked once, before its attempts; a fallback's are
    checked on the request it is handed."""
    before = len(PROVIDERS["capped"].received)  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="overflowing", messages=MESSAGES, max_tokens=1000, stream=stream
        )
    assert caught.value.param == "max_tokens"
    assert "'capped'" in caught.value.message
    assert len(PROVIDERS["capped"].received) == before  # type: ignore[attr-defined]
    within = client.chat.completions.create(model="overflowing", messages=MESSAGES, max_tokens=9)
    assert within.choices[0].message.content == "corto"


class _Anyone:
    name = None

    async def admit(self, model: str, reserve: int) -> Any:
        class Admitted:
            headers: dict[str, str] = {}  # noqa: RUF012 - read only
            reservation = None

        return Admitted()


async def test_a_stream_its_front_door_never_started_is_closed_and_finished() -> None:
    from server.config import parse_config
    from server.observability.metrics import Metrics
    from server.pipeline.catalog import Catalog
    from server.pipeline.pipeline import Pipeline
    from server.pipeline.request import ChatRequest

    config = parse_config(
        "models:\n  - {name: m, provider: openai_compatible, base_url: http://h/v1}\n", "t", {}
    )
    provider = FakeProvider("uno dos")
    pipeline = Pipeline(Metrics(), config, Catalog(config.models, {"m": provider}))
    finished: list[int] = []

    async def listener(record: Any) -> None:
        finished.append(record.status)

    pipeline.listeners.append(listener)
    request = ChatRequest.from_body({"model": "m", "messages": MESSAGES, "stream": True})
    with pytest.raises(RuntimeError):
        async with pipeline.exchange(api="chat", request_id="r", principal=_Anyone()) as ex:
            await ex.open_stream(request)
            raise RuntimeError("the front door broke before the first frame")
    assert provider.closed_streams == 1
    assert finished == [500]
    assert pipeline.generations.in_flight_before(10**9) == 0


class _Held(FakeProvider):
    """Answers once released, so that requests stay in flight meanwhile."""

    def __init__(self) -> None:
        super().__init__("listo")
        self.waiting = 0
        self.two_waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request: Any) -> Any:
        self.waiting += 1
        if self.waiting == 2:
            self.two_waiting.set()
        await self.release.wait()
        return await super().complete(request)


async def test_requests_in_flight_are_what_a_scrape_shows() -> None:
    from server.config import parse_config
    from server.observability.metrics import Metrics
    from server.pipeline.catalog import Catalog
    from server.pipeline.pipeline import Pipeline
    from server.pipeline.request import ChatRequest

    config = parse_config(
        "models:\n  - {name: m, provider: openai_compatible, base_url: http://h/v1}\n", "t", {}
    )
    provider = _Held()
    pipeline = Pipeline(Metrics(), config, Catalog(config.models, {"m": provider}))
    request = ChatRequest.from_body({"model": "m", "messages": MESSAGES})

    async def ask() -> Any:
        async with pipeline.exchange(api="chat", request_id="r", principal=_Anyone()) as ex:
            return await ex.complete(request)

    def shown() -> str:
        text = generate_latest(pipeline.metrics.registry).decode()
        return next(line for line in text.splitlines() if line.startswith("puente_requests_in_f"))

    asking = [asyncio.ensure_future(ask()) for _ in range(2)]
    await provider.two_waiting.wait()
    assert shown() == 'puente_requests_in_flight{model="m"} 2.0'
    provider.release.set()
    answers = await asyncio.gather(*asking)
    assert [a.data["choices"][0]["message"]["content"] for a in answers] == ["listo", "listo"]
    assert shown() == 'puente_requests_in_flight{model="m"} 0.0'
