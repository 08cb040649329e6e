"""What the cloud vendor providers share: the connections to the vendors, and the image fetcher.

The providers' chat paths speak each vendor's HTTP themselves (``vendor_http``) on Puente's own
HTTP/1.1 client (``http1``, a pool of its own: ``vendor_pool``). What they still ask of the
``openai``, ``anthropic`` and ``google-genai`` SDKs (embeddings, legacy completions, token
counts, building error objects) goes through one ``httpx2.AsyncClient`` whose transport sends
over one aiohttp session (``aiohttp_transport``), so connections are pooled across models and
closed once, in the app's lifespan. ``httpx2``'s own pool cost several times aiohttp's CPU per
request (``bench/README.md``, "Every provider kind"). Nothing connects until a provider sends.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import aiohttp
import httpx2

from server.config import ImageFetchConfig, ModelConfig
from server.providers import http1
from server.providers.aiohttp_transport import AiohttpTransport
from server.providers.images import ImageFetcher
from server.providers.sdk_limits import BoundedTransport


class CloudClients:
    def __init__(
        self,
        images: ImageFetchConfig | None = None,
        *,
        sdk_pool: Literal["aiohttp", "httpx2"] = "aiohttp",
        trace_configs: list[aiohttp.TraceConfig] | None = None,
    ) -> None:
        """``sdk_pool="httpx2"`` keeps the SDKs on their own pool (for ``bench/`` to compare);
        ``trace_configs`` lets a test watch the session's connections."""
        self.images = ImageFetcher(images)
        self._http: httpx2.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sdk_pool = sdk_pool
        self._trace_configs = trace_configs
        # Idle connections kept 15 s, as the session's below (the vendors keep theirs longer; a
        # proxy may not). No proxy from the environment: http1 reads none.
        self.vendor_pool = http1.Pool(idle_timeout=15)
        """The chat paths' connections (``vendor_http``)."""

    def vendor_session(self) -> aiohttp.ClientSession:
        """The session every vendor request goes over, built on first use (in the event loop
        that serves; a provider may be built before it runs)."""
        if self._session is None:
            # No connection cap: per-model limits decide concurrency. Idle connections are kept
            # 15 s (the vendors keep theirs longer; a proxy may not, hence not longer). No proxy
            # or credentials from the environment: the SDKs were told not to read it either.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=15)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                trace_configs=self._trace_configs,
            )
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session, once built."""
        return self._session

    @property
    def http(self) -> httpx2.AsyncClient:
        """The SDKs' client. Redirects are not followed: a vendor API never redirects a POST,
        and a proxy that does is misconfigured. Every response passes through the upstream
        limits (``sdk_limits``)."""
        if self._http is None:
            pool: httpx2.AsyncBaseTransport
            if self._sdk_pool == "httpx2":
                pool = httpx2.AsyncHTTPTransport(
                    limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100)
                )
            else:
                pool = AiohttpTransport(self.vendor_session)
            self._http = httpx2.AsyncClient(
                transport=BoundedTransport(pool), follow_redirects=False
            )
        return self._http

    async def aclose(self) -> None:
        await self.images.aclose()
        await self.vendor_pool.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Lets the connector's transports finish closing before the loop goes on (no
            # ResourceWarning for a socket closed a moment after its session).
            await asyncio.sleep(0)


def sdk_timeout(config: ModelConfig) -> httpx2.Timeout:
    """The model's timeouts for an SDK client: ``read`` bounds each wait for the next bytes."""
    t = config.timeouts
    return httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)
