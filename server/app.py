"""The app factory: ``create_app(settings)`` builds nothing until its lifespan starts.

``providers`` replaces the provider of the named model entries (tests inject in-memory fakes);
every other entry gets the provider its ``provider:`` kind builds.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from server import console
from server.access import start_access
from server.access.responses import ResponseStore
from server.access.startup import metrics_key_hash
from server.api import admin, chat, completions, embeddings, health, models
from server.api.envelopes import error_response_for
from server.api.fast_lane import Doors, FastLane, LaneApp, lanes
from server.api.messages import route as messages
from server.api.middleware import BodyLimitMiddleware, CorsMiddleware, RequestIdMiddleware
from server.api.responses_api import route as responses
from server.config import Settings
from server.errors import InvalidRequest, MethodNotAllowed, NotFound, PuenteError, param_path
from server.lifecycle.readiness import Readiness
from server.lifecycle.reloader import Reloader
from server.lifecycle.runtime import Runtime
from server.observability.metrics import Metrics
from server.pipeline.catalog import Catalog
from server.pipeline.pipeline import Pipeline
from server.providers import Clients, Provider, build_provider, close_providers
from server.providers.cloud import CloudClients

log = logging.getLogger("puente")


async def _build_clients(settings: Settings) -> Clients:
    # No connection cap: the per-model limits decide concurrency, not the pool. Idle
    # connections are dropped after 4 s, before uvicorn-based upstreams (vLLM) drop theirs at
    # 5 s: reusing a connection the upstream is closing fails the request.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=4)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None)
    )
    # ``upstream`` (the requests' own pool) is ``Clients``' default: the same 4 s idle timeout.
    return Clients(aiohttp=session, cloud=CloudClients(settings.config.server.images))


async def _close_clients(clients: Clients) -> None:
    await clients.upstream.aclose()
    await clients.aiohttp.close()
    await clients.cloud.aclose()


async def _close_served(pipeline: Pipeline) -> None:
    """The providers of whatever configuration is served at shutdown (after any reloads)."""
    await close_providers(pipeline.snapshot.catalog.providers.values())


async def _start_providers(
    settings: Settings, clients: Clients, injected: Mapping[str, Provider]
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    try:
        for model in settings.config.models:
            providers[model.name] = injected.get(model.name) or build_provider(model, clients)
        for provider in providers.values():
            await provider.start()
    except BaseException:
        await close_providers(providers.values())
        raise
    return providers


_YOUNG_COLLECTION = 10_000


def _freeze_startup_objects() -> None:
    """What was loaded to start (the framework, the vendor SDKs, the configuration: some
    300,000 objects) lives as long as the process; every full garbage collection would walk it
    again, a pause of ~150 ms for every request and stream in flight (bench/README.md, "The
    pause of a full collection"). Frozen, the collector leaves it out."""
    gc.collect()
    gc.freeze()
    # A young collection every _YOUNG_COLLECTION net allocations instead of 700: with 32
    # requests in flight, 700 came round every ~16 requests and each walk found the in-flight
    # requests' objects alive, promoting them to be walked again; ~14 us a request in all
    # (bench/PIPE.md, "Young collections").
    gc.set_threshold(_YOUNG_COLLECTION, *gc.get_threshold()[1:])


def create_app(settings: Settings, providers: Mapping[str, Provider] | None = None) -> LaneApp:
    injected = dict(providers or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Torn down in reverse: usage rows written, then providers, then the HTTP clients.
            clients = await _build_clients(settings)
            stack.push_async_callback(_close_clients, clients)
            metrics = Metrics()
            started = await _start_providers(settings, clients, injected)
            catalog = Catalog(settings.config.models, started)
            pipeline = Pipeline(metrics, settings.config, catalog)
            stack.push_async_callback(_close_served, pipeline)
            access = await start_access(settings, metrics)  # keys, limits, usage rows
            stack.push_async_callback(access.aclose)
            pipeline.listeners.append(access.on_request_end)
            reloader = Reloader(settings, clients, pipeline)
            stack.push_async_callback(reloader.aclose)
            app.state.runtime = Runtime(
                settings=settings,
                metrics=metrics,
                clients=clients,
                pipeline=pipeline,
                access=access,
                reloader=reloader,
                responses=ResponseStore(
                    access, metrics.responses_stored, lambda: pipeline.snapshot.config.responses
                ),
                readiness=Readiness(pipeline),
                started_at=int(time.time()),
                metrics_key_hash=metrics_key_hash(),
            )
            reloader.install_signal()
            _announce(settings, catalog)
            _freeze_startup_objects()
            try:
                yield
            finally:
                pipeline.drain.draining = True

    app = LaneApp(
        # FastAPI's own OpenTelemetry hooks ask, on every request, whether a tracer, meter or
        # logger provider is configured (an environment lookup each time: a sixth of Puente's
        # CPU per request in front of the engine, bench/README.md). Puente reports through
        # its Prometheus metrics and request log, so they stay off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Puente",
        summary="OpenAI-compatible gateway to local and cloud models.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.include_router(chat.router)
    app.include_router(embeddings.router)
    app.include_router(completions.router)
    app.include_router(messages.router)
    app.include_router(responses.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    _install_error_handlers(app)
    # Innermost: the front doors' POSTs skip FastAPI's routing and dependency solving.
    fast = (
        chat.chat_completions,
        completions.completions,
        embeddings.embeddings,
        messages.messages,
        responses.create_response,
    )
    routers = (
        chat.router,
        completions.router,
        embeddings.router,
        messages.router,
        responses.router,
    )
    paths = lanes(routers, fast)
    limit = settings.config.server.max_body_bytes
    app.add_middleware(FastLane, lanes=paths)
    app.add_middleware(BodyLimitMiddleware, limit=limit)
    app.add_middleware(RequestIdMiddleware)
    if settings.config.server.cors.allow_origins:  # outermost: preflights need no key
        app.add_middleware(CorsMiddleware, config=settings.config.server.cors)
    # What those three do, for the doors' POSTs, before Starlette's and FastAPI's layers.
    cors = bool(settings.config.server.cors.allow_origins)
    app.doors = Doors(app.whole, app, paths, limit=limit, cors=cors)
    return app


def _announce(settings: Settings, catalog: Catalog) -> None:
    names = ", ".join(m.name for m in catalog.available()) or "none"
    log.info("Puente ready on %s:%s; models: %s", settings.host, settings.port, names)
    for model in settings.config.models:
        if model.missing_env:
            log.warning("model %s is disabled: set %s to enable it", model.name, model.missing_env)


def _install_error_handlers(app: FastAPI) -> None:
    def render(request: Request, error: PuenteError) -> Response:
        return error_response_for(request.url.path, request.headers, error)

    async def puente_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PuenteError)
        return render(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = param_path(loc) or None
        return render(
            request,
            InvalidRequest(
                f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param
            ),
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: PuenteError
        if exc.status_code == 404:
            error = NotFound(f"No route for {request.method} {request.url.path}.")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.")
        else:
            error = InvalidRequest(str(exc.detail))
        return render(request, error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, PuenteError("The server had an error processing your request."))

    app.add_exception_handler(PuenteError, puente_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
