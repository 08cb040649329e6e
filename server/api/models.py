"""``GET /v1/models`` and ``GET /v1/models/{id}``: what a client may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.api.responses import JSONResponse
from server.config import ModelConfig
from server.errors import ModelNotFound
from server.runtime import Runtime, RuntimeDep

router = APIRouter()


def model_card(config: ModelConfig, created: int, owned_by: str) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": config.name,
        "object": "model",
        "created": created,
        "owned_by": owned_by,
    }
    if config.description:
        card["description"] = config.description
    return card


def _cards(runtime: Runtime) -> list[dict[str, Any]]:
    created = runtime.extensions.get("started_at", 0)
    providers = runtime.router.providers
    return [
        model_card(m, created, providers[m.name].kind)
        for m in runtime.router.available()
        if not m.is_wildcard
    ]


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse({"object": "list", "data": _cards(runtime)})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, runtime: RuntimeDep) -> JSONResponse:
    for card in _cards(runtime):
        if card["id"] == model_id:
            return JSONResponse(card)
    runtime.router.resolve(model_id)  # a configured-but-unavailable model says why
    raise ModelNotFound(f"The model '{model_id}' does not exist.")
