"""The cloud providers' chat paths send on one pool of Puente's own client (``vendor_http`` on
``http1``), what they still ask of the vendor SDKs through one aiohttp session
(``server/providers/aiohttp_transport.py``): connections are reused and closed at shutdown, and
the upstream limits still hold on both. Real providers, real SDKs, the faithful fakes."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from server.config import ModelConfig
from server.errors import UpstreamProtocolError
from server.pipeline.request import ChatRequest, UpstreamRequest
from server.providers import Clients, build_provider
from server.providers.base import Provider, TextCompleter
from server.providers.cloud import CloudClients
from server.providers.http1 import split_url
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


def _received(openai_fake: FakeOpenAI, claude: FakeAnthropic, gemini: FakeGemini) -> list[int]:
    return [len(openai_fake.state.received), len(claude.state.received), len(gemini.state.received)]


async def test_every_chat_path_sends_through_one_reused_pool(
    cloud: tuple[CloudClients, Watched],
    fake_upstream: FakeOpenAI,
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
) -> None:
    clients, watched = cloud
    before = _received(fake_upstream, anthropic_vendor, gemini_vendor)
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
    pool = clients.vendor_pool
    urls = (fake_upstream.base_url, anthropic_vendor.url, gemini_vendor.url)
    origins = {split_url(url)[0] for url in urls}
    # Four requests to each vendor, all on the vendor pool, on one connection each (one at a
    # time); none on the SDKs' aiohttp session.
    after = _received(fake_upstream, anthropic_vendor, gemini_vendor)
    assert [a - b for a, b in zip(after, before, strict=True)] == [4, 4, 4]
    assert set(pool.opened) == origins
    assert all(pool.opened[o] == 1 for o in origins), pool.opened
    assert all(pool.idle(o) == 1 for o in origins)
    assert not watched.sent
    await clients.aclose()
    assert all(pool.idle(o) == 0 for o in origins)
    gc.collect()  # an unclosed connection would warn here, and warnings are errors


async def test_an_answer_over_the_body_limit_is_still_cut_on_the_vendor_pool(
    cloud: tuple[CloudClients, Watched],
    fake_upstream: FakeOpenAI,
    anthropic_vendor: FakeAnthropic,
    gemini_vendor: FakeGemini,
) -> None:
    clients, _ = cloud
    limits = {"upstream_limits": {"max_body_bytes": 64}}  # every answer is longer
    before = _received(fake_upstream, anthropic_vendor, gemini_vendor)
    async with aiohttp.ClientSession() as session:
        providers = _providers(
            clients, session, fake_upstream, anthropic_vendor, gemini_vendor, **limits
        )
        for name, provider in providers.items():
            with pytest.raises(UpstreamProtocolError, match="not its API"):
                await provider.complete(_request(name).for_attempt(_upstream(name)))
    after = _received(fake_upstream, anthropic_vendor, gemini_vendor)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert sum(clients.vendor_pool.opened.values()) == 3


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
    assert clients.session is None  # the chat path is on the vendor pool
    assert isinstance(provider, TextCompleter)
    prompt = {"model": "fake-model", "prompt": "hola", "max_tokens": 5}
    await provider.complete_text(
        UpstreamRequest(
            body=prompt, model="gpt", upstream_model="fake-model", operation="completions"
        )
    )
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
