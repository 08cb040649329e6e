"""``/health`` (the process is up), ``/ready`` (every upstream can serve), ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from server.api.deps import RuntimeDep
from server.api.wire import JSONResponse
from server.providers import Health

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    if runtime.draining:
        # SIGTERM: at once and without probing upstreams, so load balancers stop sending here.
        return JSONResponse({"status": "not_ready", "detail": "shutting down"}, status_code=503)
    snapshot = runtime.pipeline.snapshot
    timeout = snapshot.config.server.ready_timeout
    models = snapshot.catalog.available()
    providers = snapshot.catalog.providers

    async def check(name: str) -> Health:
        try:
            return await asyncio.wait_for(providers[name].health(), timeout)
        except TimeoutError:
            return Health("down", detail=f"health check took longer than {timeout:g}s")

    results = await asyncio.gather(*(check(m.name) for m in models))
    report = {
        m.name: {
            "state": h.state,
            **({"detail": h.detail} if h.detail else {}),
            **({"endpoints": h.endpoints} if h.endpoints else {}),
            **runtime.pipeline.resilience.report(m),  # breaker state, concurrency
        }
        for m, h in zip(models, results, strict=True)
    }
    ok = all(h.ok for h in results) and not runtime.draining
    body = {"status": "ready" if ok else "not_ready", "models": report}
    if runtime.draining:
        body["detail"] = "shutting down"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
