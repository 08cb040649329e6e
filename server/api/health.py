"""``/health`` (the process is up), ``/ready`` (the models it must serve can), ``/metrics``.

``/ready`` shows every model's state to anyone (a load balancer needs no key); what would tell
an outsider about the inside — upstream URLs, their errors — only to the admin key.
``/metrics`` needs ``PUENTE_METRICS_KEY`` (or the admin key) when that variable is set.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from server.access.auth import presented_secret
from server.access.keys import hash_secret, same_hash
from server.api.deps import RuntimeDep
from server.api.wire import JSONResponse, error_response
from server.errors import Unauthorized
from server.lifecycle.readiness import is_ready

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request, runtime: RuntimeDep) -> JSONResponse:
    if runtime.draining:
        # SIGTERM: at once and without probing upstreams, so load balancers stop sending here.
        return JSONResponse({"status": "not_ready", "detail": "shutting down"}, status_code=503)
    models = await runtime.readiness.check()
    inside = runtime.access.is_admin(request.headers)
    report: dict[str, Any] = {}
    for m in models:
        entry: dict[str, Any] = {"state": m.health.state, "required": m.config.ready_required}
        if inside:
            if m.health.detail:
                entry["detail"] = m.health.detail
            if m.health.endpoints:
                entry["endpoints"] = m.health.endpoints
        entry.update(runtime.pipeline.resilience.report(m.config))  # breaker, concurrency
        report[m.config.name] = entry
    ok = is_ready(models) and not runtime.draining
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "models": report}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    if runtime.metrics_key_hash is not None:
        secret = presented_secret(request.headers)
        allowed = secret is not None and same_hash(runtime.metrics_key_hash, hash_secret(secret))
        if not (allowed or runtime.access.is_admin(request.headers)):
            error = Unauthorized("/metrics needs PUENTE_METRICS_KEY (or the admin key).")
            error.headers["WWW-Authenticate"] = "Bearer"
            return error_response(error)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
