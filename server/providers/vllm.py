"""``provider: vllm``: a vLLM engine, launched and supervised by Puente or already running.

vLLM speaks OpenAI's API, so requests go through the OpenAI-compatible provider. What is
vLLM's own: the engine's root ``/health`` for probes, the supervised child process (``launch:``),
answering 503 with Retry-After while it loads, and a clear 400 when tools reach an engine that
was started without a tool-call parser. Replicas (``endpoints:``) are health-checked all the
time, not only once they refused a connection: a vLLM whose engine core died still accepts
connections but answers ``/health`` with 503, and is taken out before a client meets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp
import orjson

from server.config import LaunchConfig, ModelConfig
from server.engine.supervisor import Engine
from server.errors import (
    InvalidRequest,
    ServiceUnavailable,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from server.pipeline.request import JSON, ChatRequest, StreamChunk, UpstreamRequest
from server.providers import http1
from server.providers.balancer import Endpoint
from server.providers.base import EngineOwner, Health
from server.providers.openai_compatible import (
    PROBE_INTERVAL,
    OpenAICompatibleProvider,
    error_from_status,
)
from server.providers.tasks import check_task

# What a client is told to wait while an engine loads or restarts.
LOADING_RETRY_AFTER = 10.0
# How often a reload looks whether the engine it started is ready.
ENGINE_READY_POLL = 0.5


class EngineNotReady(Exception):
    """A reload's new engine did not become ready; the message says why."""


def engine_spec(config: ModelConfig) -> tuple[LaunchConfig, str] | None:
    """What a launched engine is started from: two entries equal here can share one engine."""
    if config.provider != "vllm" or config.launch is None:
        return None
    return config.launch, config.upstream_name(config.name)


class VLLMProvider(OpenAICompatibleProvider):
    kind = "vllm"

    def __init__(
        self,
        config: ModelConfig,
        session: aiohttp.ClientSession,
        pool: http1.Pool | None = None,
        *,
        engine: Engine | None = None,
    ) -> None:
        self.engine: Engine | None = None
        # Whether ``aclose`` stops the engine: false for a provider built by a reload around the
        # engine of the provider it replaces, until ``take_engine`` hands it over at the swap.
        self._owns_engine = True
        if config.launch is not None:
            if engine is not None:
                self.engine, self._owns_engine = engine, False
            else:
                self.engine = Engine(config.name, config.upstream_name(config.name), config.launch)
            config = config.model_copy(update={"endpoints": [self.engine.base_url]})
        super().__init__(config, session, pool)
        self._checker: asyncio.Task[None] | None = None

    # -- reloads (server/lifecycle/reloader.py) ---------------------------------------------

    def successor(self, config: ModelConfig, session: aiohttp.ClientSession) -> VLLMProvider | None:
        """A provider for the changed entry ``config`` around this one's running engine, when
        the engine it asks for is the same one (only e.g. ``description`` or ``retries``
        changed); None when a new engine must start."""
        if self.engine is None or engine_spec(config) != engine_spec(self.config):
            return None
        # The shared pool goes on with it; a pool of this provider's own closes with it.
        shared = None if self._owns_pool else self._pool
        return VLLMProvider(config, session, shared, engine=self.engine)

    def take_engine(self, previous: EngineOwner) -> None:
        """At the swap: this provider stops the shared engine from now on, ``previous`` (still
        finishing its requests) no longer does."""
        assert isinstance(previous, VLLMProvider)
        assert self.engine is not None
        assert self.engine is previous.engine
        previous._owns_engine, self._owns_engine = False, True

    @property
    def replaces_engine(self) -> bool:
        """A launched engine of its own, started by ``start``."""
        return self.engine is not None and self._owns_engine

    async def engine_ready(self, draining: Callable[[], bool]) -> None:
        """Until the launched engine answers its health check. Raises ``EngineNotReady`` if it
        fails (exits, cannot start) or is not ready within ``launch.startup_timeout``, or when
        Puente starts shutting down meanwhile (``draining``)."""
        engine = self.engine
        assert engine is not None
        deadline = time.monotonic() + engine.launch.startup_timeout
        while engine.state != "ready":
            if engine.state == "down":
                raise EngineNotReady(engine.detail or "the engine stopped")
            if draining():
                raise EngineNotReady("Puente is shutting down")
            if time.monotonic() > deadline:
                timeout = engine.launch.startup_timeout
                raise EngineNotReady(f"not ready after {timeout:.0f} s (launch.startup_timeout)")
            await asyncio.sleep(ENGINE_READY_POLL)

    def engine_state(self) -> str | None:
        return self.engine.state if self.engine is not None else None

    @property
    def engine_port(self) -> int | None:
        return self.engine.port if self.engine is not None and self.engine.launch.port else None

    async def start(self) -> None:
        if self.engine is not None:
            if self._owns_engine:
                self.engine.start()
        else:
            name = f"health checks {self.config.name}"
            self._checker = asyncio.create_task(self._check_replicas(), name=name)
        await super().start()

    async def aclose(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
            self._checker = None
        await super().aclose()
        if self.engine is not None and self._owns_engine:
            await self.engine.stop()

    async def _check_replicas(self) -> None:
        """Probe the healthy replicas too; the base prober brings failed ones back in."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            healthy = [e for e in self.balancer.endpoints if e.healthy]
            await asyncio.gather(*(self._probe(e, PROBE_INTERVAL) for e in healthy))

    def _probe_url(self, endpoint: Endpoint) -> str:
        # vLLM's health check lives at the server root, beside /v1.
        return endpoint.url.removesuffix("/v1") + "/health"

    def _check_engine(self) -> None:
        if self.engine is not None and self.engine.state != "ready":
            verb = "is loading" if self.engine.state in ("starting", "loading") else "is down"
            detail = f" ({self.engine.detail})" if self.engine.detail else ""
            raise ServiceUnavailable(
                f"Model '{self.config.name}' {verb}{detail}; try again shortly.",
                retry_after=LOADING_RETRY_AFTER,
                code="model_loading" if verb == "is loading" else "model_unavailable",
            )

    @contextmanager
    def _explained(self, request: UpstreamRequest) -> Iterator[None]:
        """vLLM's 400 for tools on an engine without a tool-call parser, made actionable; a
        launched engine that cannot be reached is one that just died and is being restarted
        (the supervisor notices within a moment), so the client is told to come back."""
        try:
            yield
        except UpstreamConnectionError:
            if self.engine is None:
                raise
            raise ServiceUnavailable(
                f"Model '{self.config.name}' is unavailable: its engine stopped and is being "
                "restarted; try again shortly.",
                retry_after=LOADING_RETRY_AFTER,
                code="model_unavailable",
            ) from None
        except UpstreamStatusError as error:
            if not (
                error.upstream_status == 400
                and request.body.get("tools")
                and "tool-call-parser" in error.message
            ):
                raise
            raise InvalidRequest(
                f"Model '{self.config.name}' was started without tool calling, so it cannot "
                "take 'tools'. Set 'launch.tool_call_parser' in its config entry (for a "
                "launched engine), or start the engine with --enable-auto-tool-choice "
                "--tool-call-parser NAME.",
                param="tools",
                code="tools_not_enabled",
            ) from None

    async def complete(self, request: ChatRequest) -> JSON:
        check_task(self.config, "chat")
        self._check_engine()
        with self._explained(request):
            return await super().complete(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        check_task(self.config, "chat")
        self._check_engine()
        with self._explained(request):
            async with super().stream(request) as chunks:
                yield chunks

    async def embed(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "embeddings")
        self._check_engine()
        with self._explained(request):
            return await super().embed(request)

    async def complete_text(self, request: UpstreamRequest) -> JSON:
        check_task(self.config, "completions")
        self._check_engine()
        with self._explained(request):
            return await super().complete_text(request)

    @asynccontextmanager
    async def stream_text(
        self, request: UpstreamRequest
    ) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        check_task(self.config, "completions")
        self._check_engine()
        with self._explained(request):
            async with super().stream_text(request) as chunks:
                yield chunks

    async def count_tokens(self, request: ChatRequest) -> int:
        """The engine's own count of this request's prompt: vLLM's ``POST /tokenize`` (beside
        ``/v1``) applies the model's chat template, tools included, as a completion would."""
        self._check_engine()
        endpoint = self.balancer.pick()
        if endpoint is None:
            raise UpstreamConnectionError(f"No endpoint of model '{self.config.name}' is up.")
        body: JSON = {
            "model": request.upstream_model,
            "messages": request.messages,
            "add_generation_prompt": True,
        }
        if request.body.get("tools"):
            body["tools"] = request.body["tools"]
        url = endpoint.url.removesuffix("/v1") + "/tokenize"
        try:
            payload = orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise InvalidRequest(
                "The request is nested too deeply to count (more than 255 levels).",
                code="invalid_value",
            ) from None
        try:
            async with self._session.post(
                url,
                data=payload,
                headers=self._request_headers(),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if response.status >= 400:
                    raw = await self._read(response, error=True)
                    raise error_from_status(
                        response.status, raw, response.headers, self.config.name, self.redact
                    )
                raw = await self._read(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamConnectionError(
                f"Model '{self.config.name}' could not count tokens: {type(exc).__name__}."
            ) from None
        try:
            count = orjson.loads(raw).get("count")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            raise UpstreamProtocolError(f"Model '{self.config.name}' answered /tokenize oddly.")
        return count

    async def health(self, timeout: float = 3.0) -> Health:
        if self.engine is not None and self.engine.state != "ready":
            if self.engine.state == "down":
                return Health("down", detail=self.engine.detail)
            return Health("loading", detail=self.engine.detail)
        return await super().health(timeout)
