"""``GET /v1/models`` and ``GET /v1/models/{id}``: what a client may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.api.deps import PrincipalDep, RuntimeDep
from server.api.messages import models as anthropic
from server.api.wire import JSONResponse
from server.config import ModelConfig
from server.errors import ModelNotFound
from server.lifecycle.runtime import Runtime
from server.personas.persona import Personas
from server.pipeline.catalog import Catalog
from server.providers.base import Provider, TextCompleter

router = APIRouter()

# The front doors every chat model answers (DESIGN.md, "Four front doors").
CHAT_ENDPOINTS = ["/v1/chat/completions", "/v1/responses", "/v1/messages"]


def served_endpoints(config: ModelConfig, provider: Provider) -> list[str]:
    """The endpoints a model answers: an embedding model ``/v1/embeddings`` only; a chat model
    the chat front doors, and legacy ``/v1/completions`` where its provider passes it on."""
    if config.embeds:
        return ["/v1/embeddings"]
    if isinstance(provider, TextCompleter):
        return [*CHAT_ENDPOINTS, "/v1/completions"]
    return list(CHAT_ENDPOINTS)


def model_card(
    config: ModelConfig, created: int, owned_by: str, state: str | None = None
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": config.name,
        "object": "model",
        "created": created,
        "owned_by": owned_by,
    }
    if config.description:
        card["description"] = config.description
    if state is not None:
        card["status"] = state  # a launched engine: starting, loading, ready or down
    return card


def persona_cards(personas: Personas, catalog: Catalog, created: int) -> list[dict[str, Any]]:
    """Entries for the personas whose model can serve now."""
    cards = []
    for persona in personas:
        try:
            catalog.resolve(persona.model)
        except ModelNotFound:
            continue  # its model is disabled (a missing key): so is the persona
        cards.append(persona.card(created))
    return cards


def _cards(runtime: Runtime) -> list[dict[str, Any]]:
    snapshot, created = runtime.pipeline.snapshot, runtime.started_at
    providers = snapshot.catalog.providers
    cards = []
    for m in snapshot.catalog.available():
        if m.is_wildcard:
            continue
        provider = providers[m.name]
        card = model_card(m, created, provider.kind, provider.engine_state())
        card["endpoints"] = served_endpoints(m, provider)
        cards.append(card)
    for card in persona_cards(snapshot.personas, snapshot.catalog, created):
        card["endpoints"] = list(CHAT_ENDPOINTS)  # personas answer chat only
        cards.append(card)
    return cards


@router.get("/v1/models")
async def list_models(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    cards = [card for card in _cards(runtime) if principal.may_use(card["id"])]
    if anthropic.wants_anthropic(request.headers):  # the anthropic SDK's models.list()
        return JSONResponse(
            anthropic.page([anthropic.card(c) for c in cards], request.query_params)
        )
    return JSONResponse({"object": "list", "data": cards})


@router.get("/v1/models/{model_id:path}")
async def get_model(
    model_id: str, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    if not principal.may_use(model_id):  # the same 404 as a model that does not exist
        raise ModelNotFound.named(model_id)
    for card in _cards(runtime):
        if card["id"] == model_id:
            if anthropic.wants_anthropic(request.headers):
                return JSONResponse(anthropic.card(card))
            return JSONResponse(card)
    snapshot = runtime.pipeline.snapshot
    persona = snapshot.personas.get(model_id)
    # A configured-but-unavailable model (or a persona's) says why.
    snapshot.catalog.resolve(persona.model if persona else model_id)
    raise ModelNotFound.named(model_id)
