"""The app factory: ``create_app(settings)`` builds nothing until its lifespan starts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from server.access import start_access, stop_access
from server.api import admin, chat, health, models
from server.api.middleware import BodyLimitMiddleware, CorsMiddleware, RequestIdMiddleware
from server.api.wire import error_response
from server.config import Settings
from server.errors import InvalidRequest, MethodNotAllowed, NotFound, PuenteError
from server.lifecycle.reloader import Reloader
from server.lifecycle.runtime import Runtime
from server.observability.metrics import Metrics
from server.personas.persona import Personas
from server.pipeline.catalog import Router
from server.pipeline.pipeline import Gateway
from server.providers import Clients, Provider, build_provider
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
    return Clients(aiohttp=session, cloud=CloudClients(settings.config.server.images))


async def build_runtime(settings: Settings) -> Runtime:
    clients = await _build_clients(settings)
    metrics = Metrics()
    providers: dict[str, Provider] = {}
    try:
        for model in settings.config.models:
            providers[model.name] = build_provider(model, clients)
        for provider in providers.values():
            await provider.start()
    except BaseException:
        await _close(providers, clients)
        raise
    router = Router(settings.config.models, providers)
    runtime = Runtime(
        settings=settings,
        metrics=metrics,
        clients=clients,
        router=router,
        gateway=Gateway(router, metrics, Personas(settings.config.personas)),
    )
    runtime.extensions["started_at"] = int(time.time())
    return runtime


async def _close(providers: dict[str, Provider], clients: Clients) -> None:
    for provider in providers.values():
        try:
            await provider.aclose()
        except Exception:
            log.exception("closing provider %s failed", provider.kind)
    await clients.aiohttp.close()
    await clients.cloud.aclose()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await build_runtime(settings)
        try:
            await start_access(runtime)  # keys, limits, usage rows (server/access/)
        except BaseException:
            await _close(runtime.router.providers, runtime.clients)
            raise
        app.state.runtime = runtime
        reloader = runtime.extensions["reloader"] = Reloader(runtime)
        reloader.install_signal()
        names = ", ".join(m.name for m in runtime.router.available()) or "none"
        log.info("Puente ready on %s:%s; models: %s", settings.host, settings.port, names)
        for model in settings.config.models:
            if model.missing_env:
                log.warning(
                    "model %s is disabled: set %s to enable it", model.name, model.missing_env
                )
        try:
            yield
        finally:
            runtime.draining = True
            await reloader.aclose()
            await stop_access(runtime)  # writes the usage rows still pending
            await _close(runtime.router.providers, runtime.clients)

    app = FastAPI(
        title="Puente",
        summary="OpenAI-compatible gateway to local and cloud models.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    _install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.config.server.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    if settings.config.server.cors.allow_origins:  # outermost: preflights need no key
        app.add_middleware(CorsMiddleware, config=settings.config.server.cors)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def puente_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PuenteError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return error_response(
            InvalidRequest(
                f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param
            )
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
        return error_response(error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(PuenteError("The server had an error processing your request."))

    app.add_exception_handler(PuenteError, puente_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
