"""What a client or a broken Gemini can send that used to end in a 500 (issue 15, Medium 6,
provider side): each is a 400 or a 502 in OpenAI's envelope, and a client's model name never
reaches a vendor URL unvalidated."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from server.config import ModelConfig, Timeouts
from server.errors import UpstreamTimeout
from server.pipeline.request import ChatRequest
from server.providers.cloud import CloudClients
from server.providers.gemini_provider import GeminiProvider
from tests.fakes.gemini_vendor import FakeGemini
from tests.support import PuenteProcess, error_envelope


def _post(puente: PuenteProcess, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(puente.base_url + "/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(
    "name", ["gemini/../gemini-test", "gemini/x?alt=1", "gemini/x%2F..%2Fy", "gemini/x#frag"]
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_model_name_that_would_change_the_vendor_url_is_refused(
    cloud_puente: PuenteProcess, gemini_fake: FakeGemini, name: str, stream: bool
) -> None:
    before = len(gemini_fake.state.received)
    response = _post(cloud_puente, name, stream=stream)
    assert response.status_code == 400, response.text
    error = error_envelope(response)
    assert error["param"] == "model"
    assert response.headers["x-request-id"]
    assert len(gemini_fake.state.received) == before  # nothing went to the vendor


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", "abc"), ("seed", 1.5), ("presence_penalty", "high"), ("frequency_penalty", [1])],
)
def test_wrongly_typed_numbers_are_a_400(
    cloud_puente: PuenteProcess, gemini_fake: FakeGemini, field: str, value: Any
) -> None:
    response = _post(cloud_puente, "gemini-pro", **{field: value})
    assert response.status_code == 400, response.text
    assert error_envelope(response)["param"] == field


def test_only_system_messages_is_a_400(cloud_puente: PuenteProcess) -> None:
    body = {"model": "gemini-pro", "messages": [{"role": "system", "content": "be brief"}]}
    response = httpx.post(cloud_puente.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert error_envelope(response)["param"] == "messages"


@pytest.mark.parametrize("retry_after", ["５秒", "inf", "-3", "Wed, 99 Foo 2026"])
def test_a_garbled_retry_after_keeps_the_429(
    cloud_puente: PuenteProcess, gemini_fake: FakeGemini, retry_after: str
) -> None:
    gemini_fake.program("limited", status=429, retry_delay="infs", retry_after=retry_after)
    response = _post(cloud_puente, "gemini/limited")
    assert response.status_code == 429, response.text
    error_envelope(response)
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    "usage",
    [{"promptTokenCount": -5000}, {"candidatesTokenCount": "many"}, {"totalTokenCount": -1}],
)
@pytest.mark.parametrize("stream", [False, True])
def test_usage_that_is_not_counts_is_a_protocol_error(
    cloud_puente: PuenteProcess, gemini_fake: FakeGemini, usage: dict[str, Any], stream: bool
) -> None:
    gemini_fake.program("bad-usage", usage=usage)
    response = _post(cloud_puente, "gemini/bad-usage", stream=stream)
    if not stream:
        assert response.status_code == 502, response.text
        assert error_envelope(response)["code"] == "upstream_bad_response"
    else:
        # The usage arrives with the last piece: the stream ends with an error event. (A count
        # that is text fails inside the SDK, which reports the connection it then drops.)
        assert response.status_code in (200, 502), response.text
        if response.status_code == 200:
            assert '"type":"upstream_error"' in response.text
            assert response.text.rstrip().endswith("data: [DONE]")


async def test_a_vendor_stream_past_its_total_timeout_is_cut(gemini_vendor: FakeGemini) -> None:
    # Eight pieces 0.4 s apart: every wait is within ``read``, the whole is past ``total``.
    gemini_vendor.program("slow-stream", delay=0.4, reply="one two three four five six seven eight")
    config = ModelConfig(
        name="gemini-slow-stream",
        provider="gemini",
        base_url=gemini_vendor.url,
        api_key=gemini_vendor.api_key,
        timeouts=Timeouts(read=5, total=1),
    )
    clients = CloudClients()
    provider = GeminiProvider(config, clients)
    body = {"model": "slow-stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    received = 0
    try:
        with pytest.raises(UpstreamTimeout):
            async with provider.stream(ChatRequest.parse(orjson.dumps(body))) as chunks:
                async for _ in chunks:
                    received += 1
    finally:
        await clients.aclose()
    assert received >= 1  # it had started: the total, not the first wait, cut it
