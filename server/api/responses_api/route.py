"""``POST /v1/responses`` and the stored responses (``GET`` / ``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items``, ``POST /v1/responses/{id}/cancel``), and
``POST /v1/responses/input_tokens`` (exact on models that can count, else an estimate).

The door translates (``request``, ``answer``, ``stream``); the shared driver
(``server/api/front_door.py``) does everything else, as for every front door. Every model is
translated onto the chat path, OpenAI's own included: forwarding Responses natively would skip
the persona, the farewell and the usage the chat path gives, and tie stored responses to a
vendor's store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from server.access.responses import ANY_KEY, Owner, ResponseStore
from server.api.deps import authenticate, runtime_of
from server.api.front_door import Call, Parsed, serve
from server.api.responses_api.answer import Echo, to_response
from server.api.responses_api.request import translate
from server.api.responses_api.stream import Encoder, events
from server.api.sse import event_frame
from server.api.wire import JSONResponse, error_response, model_header
from server.errors import InvalidRequest, ModelNotFound, PuenteError
from server.pipeline.pipeline import Answer, AnswerStream
from server.pipeline.request import JSON, ChatRequest, load_object

log = logging.getLogger("puente.responses")

router = APIRouter()

SKIPPED_HEADER = "x-puente-skipped-tools"


@dataclass(frozen=True, slots=True)
class State:
    echo: Echo
    items: list[JSON]
    """The conversation's input items: the continued responses' items, then this request's."""
    key_name: str | None
    store: ResponseStore | None
    """Where the answer is kept; None for ``store: false``."""

    async def save(self, response: JSON) -> None:
        if self.store is not None:
            await self.store.save(self.key_name, self.items, response)


class ResponsesDoor:
    api = "responses"

    async def parse(self, raw: bytes, call: Call) -> Parsed[State]:
        body = load_object(raw)
        store = call.runtime.responses
        key_name = call.principal.name
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str):
                raise InvalidRequest(
                    "'previous_response_id' must be a string.", param="previous_response_id"
                )
            history = (await store.load(previous, key_name, "previous_response_id")).items
        translated = translate(body, history)
        headers = {}
        if translated.skipped_tools:
            log.info("responses: skipped tools Puente cannot run: %s", translated.skipped_tools)
            # Names come from the client: anything outside printable ASCII is percent-encoded.
            names = ", ".join(model_header(name) for name in translated.skipped_tools)
            headers[SKIPPED_HEADER] = names
        request = ChatRequest.from_body(translated.chat)
        keep = body.get("store", True) is not False
        state = State(
            Echo(body, translated.function_tools),
            [*history, *translated.items],
            key_name,
            store if keep else None,
        )
        return Parsed(request, state, headers)

    async def render(self, parsed: Parsed[State], answer: Answer) -> JSON:
        state = parsed.state
        response = to_response(answer.data, state.echo, answer.model)
        await state.save(response)
        return response

    def frames(self, parsed: Parsed[State], stream: AnswerStream) -> AsyncIterator[bytes]:
        state = parsed.state
        encoder = Encoder(state.echo, stream.model)
        return events(aiter(stream), encoder, on_fail=stream.fail, on_done=state.save)

    def error_response(self, error: PuenteError) -> Response:
        return error_response(error)

    def stream_error(self, error: PuenteError) -> bytes:
        # Only for a failure outside the events (a drain cut-off): the SDKs raise on ``error``.
        payload = {
            "type": "error",
            "code": error.code or error.error_type,
            "message": error.message,
            "param": error.param,
            "sequence_number": 0,
        }
        return event_frame("error", orjson.dumps(payload))


DOOR = ResponsesDoor()


@router.post("/v1/responses", response_model=None)
async def create_response(request: Request) -> Response:
    return await serve(request, DOOR)


@router.post("/v1/responses/input_tokens", response_model=None)
async def count_input_tokens(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        principal = await authenticate(request)
        body = load_object(await request.body())
        model = body.get("model")
        if isinstance(model, str) and not principal.may_use(model):
            raise ModelNotFound.named(model)
        history: list[JSON] = []
        if isinstance(previous := body.get("previous_response_id"), str):
            store = runtime.responses
            history = (await store.load(previous, principal.name, "previous_response_id")).items
        chat = ChatRequest.from_body(translate({**body, "stream": False}, history).chat)
        count, exact = await runtime.pipeline.count_input(chat)
    except PuenteError as error:
        return error_response(error)
    how = "exact" if exact else "estimate"
    return JSONResponse(
        {"object": "response.input_tokens", "input_tokens": count},
        headers={"x-puente-token-count": how},
    )


async def _owner(request: Request) -> tuple[ResponseStore, Owner]:
    """The stored responses and whose the caller may see: its key's, or all for the admin."""
    runtime = runtime_of(request)
    if runtime.access.is_admin(request.headers):
        return runtime.responses, ANY_KEY
    principal = await authenticate(request)
    return runtime.responses, principal.name


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(request: Request, response_id: str) -> Response:
    try:
        store, owner = await _owner(request)
        conversation = await store.load(response_id, owner)
    except PuenteError as error:
        return error_response(error)
    return JSONResponse(conversation.response)


@router.delete("/v1/responses/{response_id}", response_model=None)
async def delete_response(request: Request, response_id: str) -> Response:
    try:
        store, owner = await _owner(request)
        await store.delete(response_id, owner)
    except PuenteError as error:
        return error_response(error)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


@router.post("/v1/responses/{response_id}/cancel", response_model=None)
async def cancel_response(request: Request, response_id: str) -> Response:
    try:
        store, owner = await _owner(request)
        await store.load(response_id, owner)
        # Puente answers in the foreground only: a stored response is already finished.
        raise InvalidRequest(
            "Only responses created with background=true can be cancelled.",
            code="invalid_request",
        )
    except PuenteError as error:
        return error_response(error)


@router.get("/v1/responses/{response_id}/input_items", response_model=None)
async def input_items(
    request: Request,
    response_id: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: str | None = None,
) -> Response:
    try:
        store, owner = await _owner(request)
        items = (await store.load(response_id, owner)).input
    except PuenteError as error:
        return error_response(error)
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }
    )
