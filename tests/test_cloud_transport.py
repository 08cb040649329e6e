"""The vendor SDKs send through one aiohttp pool (``server/providers/aiohttp_transport.py``):
each provider's requests go over aiohttp, connections are reused and closed at shutdown, and
the upstream limits still hold on that path. Real providers, real SDKs, the faithful fakes."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from server.config import ModelConfig
from server.errors import UpstreamProtocolError
from server.pipeline.request import ChatRequest
from server.providers import Clients, build_provider
from server.providers.base import Provider
from server.providers.cloud import CloudClients
from tests.cloud_fixtures import ANTHROPIC_KEY, GEMINI_KEY
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

HELLO = {"messages": [{"role": "user", "content": "hola"}], "max_tokens": 50}


def _request(model: str, stream: bool = False) -> ChatRequest:
    return ChatRequest.from_body({"model": model, **HELLO, "stream": stream})


class Watched:
    """Connections the pool opened and requests it sent, per host:port."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.trace = aiohttp.TraceConfig()
        self.trace.on_connection_create_end.append(self._opened)
        self.trace.on_request_start.append(self._sent)
        self.pending: list[str] = []

    async def _sent(self, _s: Any, _c: Any, params: aiohttp.TraceRequestStartParams) -> None:
        where = f"{params.url.host}:{params.url.port}"
        self.sent[where] += 1
        self.pending.append(where)

    async def _opened(self, _s: Any, _c: Any, _p: Any) -> None:
        self.opened[self.pending[-1]] += 1


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[CloudClients, Watched]]:
    watched = Watched()
    clients = CloudClients(trace_configs=[watched.trace])
    yield clients, watched
    await clients.aclose()


def _providers(
    cloud: CloudClients,
    session: aiohttp.ClientSession,
    openai_fake: FakeOpenAI,
    claude: FakeAnthropic,
    gemini: FakeGemini,
    **extra: Any,
) -> dict[str, Provider]:
    configs = [
        ModelConfig(name="gpt", provider="openai", base_url=openai_fake.base_url, **extra),
        ModelConfig(
            name="claude",
            provider="anthropic",
            model="claude-sonnet-test",
            base_url=claude.url,
            api_key=ANTHROPIC_KEY,
            **extra,
        ),
        ModelConfig(
            name="gemini",
            provider="gemini",
            model="gemini-test",
            base_url=gemini.url,
            api_key=GEMINI_KEY,
            **extra,
        ),
    ]
    clients = Clients(aiohttp=session, cloud=cloud)
    return {c.name: build_provider(c, clients) for c in configs}


def _upstream(name: str) -> str:
    return {"gpt": "fake-model", "claude": "claude-sonnet-test", "gemini": "gemini-test"}[name]


async def test_every_sdk_provider_sends_through_one_reused_aiohttp_pool(
    cloud: tuple[CloudClients, Watched],
    fake_upstream: FakeOpenAI,
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
) -> None:
    clients, watched = cloud
    async with aiohttp.ClientSession() as session:
        providers = _providers(clients, session, fake_upstream, anthropic_vendor, gemini_vendor)
        for name, provider in providers.items():
            request = _request(name).for_attempt(_upstream(name))
            for _ in range(3):
                answer = await provider.complete(request)
                assert answer["choices"][0]["message"]["content"]
            async with provider.stream(
                _request(name, stream=True).for_attempt(_upstream(name))
            ) as chunks:
                assert [c async for c in chunks]
    hosts = {
        f"127.0.0.1:{fake_upstream.port}",
        f"127.0.0.1:{anthropic_vendor.port}",
        f"127.0.0.1:{gemini_vendor.port}",
    }
    # Four requests to each vendor, all over aiohttp, on one connection each (one at a time).
    assert set(watched.sent) == hosts
    assert all(watched.sent[h] == 4 for h in hosts)
    assert all(watched.opened[h] == 1 for h in hosts), watched.opened
    session_of_pool = clients.session
    assert session_of_pool is not None and not session_of_pool.closed
    await clients.aclose()
    assert session_of_pool.closed
    gc.collect()  # an unclosed session or connection would warn here, and warnings are errors


async def test_an_answer_over_the_body_limit_is_still_cut_on_the_aiohttp_path(
    cloud: tuple[CloudClients, Watched],
    fake_upstream: FakeOpenAI,
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
) -> None:
    clients, watched = cloud
    limits = {"upstream_limits": {"max_body_bytes": 64}}  # every answer is longer
    async with aiohttp.ClientSession() as session:
        providers = _providers(
            clients, session, fake_upstream, anthropic_vendor, gemini_vendor, **limits
        )
        for name, provider in providers.items():
            with pytest.raises(UpstreamProtocolError, match="not its API"):
                await provider.complete(_request(name).for_attempt(_upstream(name)))
    assert sum(watched.sent.values()) == 3


async def test_by_default_the_sdks_pool_is_aiohttp_built_on_first_use(
    fake_upstream: FakeOpenAI,
) -> None:
    clients = CloudClients()
    # Providers are built before the event loop serves (a reload, a test): nothing opens yet.
    provider = build_provider(
        ModelConfig(name="gpt", provider="openai", base_url=fake_upstream.base_url),
        Clients(aiohttp=None, cloud=clients),  # type: ignore[arg-type]
    )
    assert clients.session is None
    await provider.complete(_request("gpt").for_attempt("fake-model"))
    session = clients.session
    assert isinstance(session, aiohttp.ClientSession)
    await clients.aclose()
    assert session.closed


async def test_a_stream_line_over_the_limit_is_refused_before_the_answer_starts(
    cloud: tuple[CloudClients, Watched],
    fake_upstream: FakeOpenAI,
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
) -> None:
    clients, _ = cloud
    limits = {"upstream_limits": {"max_line_bytes": 40}}  # every first event is longer
    async with aiohttp.ClientSession() as session:
        providers = _providers(
            clients, session, fake_upstream, anthropic_vendor, gemini_vendor, **limits
        )
        for name, provider in providers.items():
            request = _request(name, stream=True).for_attempt(_upstream(name))
            with pytest.raises(UpstreamProtocolError, match="not its API"):
                async with provider.stream(request) as chunks:
                    [c async for c in chunks]
