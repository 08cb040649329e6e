"""What the cloud vendor providers share: one HTTP pool for the vendors' SDKs and the image fetcher.

The ``openai``, ``anthropic`` and ``google-genai`` SDKs all speak ``httpx2``; one
``httpx2.AsyncClient`` built here is injected into every SDK client, so connections are pooled
across models and closed once, in the app's lifespan. Nothing is built until a provider asks.
"""

from __future__ import annotations

import httpx2

from server.config import ImageFetchConfig, ModelConfig
from server.providers.images import ImageFetcher
from server.providers.sdk_limits import BoundedTransport


class CloudClients:
    def __init__(self, images: ImageFetchConfig | None = None) -> None:
        self.images = ImageFetcher(images)
        self._http: httpx2.AsyncClient | None = None

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            # No pool cap: per-model limits decide concurrency. Redirects are not followed: a
            # vendor API never redirects a POST, and a proxy that does is misconfigured.
            # Every response passes through the upstream limits (``sdk_limits``).
            pool = httpx2.AsyncHTTPTransport(
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100)
            )
            self._http = httpx2.AsyncClient(
                transport=BoundedTransport(pool), follow_redirects=False
            )
        return self._http

    async def aclose(self) -> None:
        await self.images.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def sdk_timeout(config: ModelConfig) -> httpx2.Timeout:
    """The model's timeouts for an SDK client: ``read`` bounds each wait for the next bytes."""
    t = config.timeouts
    return httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)
