"""What the cloud vendor providers share: one HTTP pool for the vendors' SDKs and the image fetcher.

The ``openai``, ``anthropic`` and ``google-genai`` SDKs all speak ``httpx2``; one
``httpx2.AsyncClient`` built here is injected into every SDK client, so connections are pooled
across models and closed once, in the app's lifespan. Its transport sends over one aiohttp
session (``aiohttp_transport``): the SDKs keep their request building, answer types and errors,
and stop paying for ``httpx2``'s pool (``bench/README.md``, "Every provider kind"). Nothing is
built until a provider asks.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import httpx2

from server.config import ImageFetchConfig, ModelConfig
from server.providers.aiohttp_transport import AiohttpTransport
from server.providers.images import ImageFetcher
from server.providers.sdk_limits import BoundedTransport


def aiohttp_pool(
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> httpx2.AsyncBaseTransport:
    """The pool the SDKs send through; ``trace_configs`` lets a test watch its connections."""
    # No connection cap: per-model limits decide concurrency. Idle connections are kept 15 s
    # (the vendors keep theirs open longer; a local fake or proxy may not, hence not longer).
    # No proxy or credentials from the environment: the SDKs were told not to read it either.

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=15)
        return aiohttp.ClientSession(
            connector=connector, trust_env=False, trace_configs=trace_configs
        )

    return AiohttpTransport(session)


def httpx2_pool() -> httpx2.AsyncBaseTransport:
    """``httpx2``'s own pool, as the SDKs use by default: kept for ``bench/`` to compare."""
    return httpx2.AsyncHTTPTransport(
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100)
    )


class CloudClients:
    def __init__(
        self,
        images: ImageFetchConfig | None = None,
        *,
        pool: Callable[[], httpx2.AsyncBaseTransport] = aiohttp_pool,
    ) -> None:
        self.images = ImageFetcher(images)
        self._http: httpx2.AsyncClient | None = None
        self._pool: httpx2.AsyncBaseTransport | None = None
        self._make_pool = pool

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            # Redirects are not followed: a vendor API never redirects a POST, and a proxy that
            # does is misconfigured. Every response passes through the upstream limits
            # (``sdk_limits``).
            self._pool = self._make_pool()
            self._http = httpx2.AsyncClient(
                transport=BoundedTransport(self._pool), follow_redirects=False
            )
        return self._http

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session under the SDKs' pool, once built (None on ``httpx2``'s own)."""
        return self._pool.session if isinstance(self._pool, AiohttpTransport) else None

    async def aclose(self) -> None:
        await self.images.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def sdk_timeout(config: ModelConfig) -> httpx2.Timeout:
    """The model's timeouts for an SDK client: ``read`` bounds each wait for the next bytes."""
    t = config.timeouts
    return httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)
