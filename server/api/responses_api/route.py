"""``/v1/responses``: the Responses API as a front door on the shared pipeline, and its stored
responses (``GET`` / ``DELETE /v1/responses/{id}``, ``GET …/input_items``).

Every model is served the same way, OpenAI's own included: the request becomes a chat request,
so personas, the farewell, keys and limits, retries, fallbacks, metrics and usage all apply as
for ``/v1/chat/completions`` (no native forwarding to OpenAI's Responses API).

Tools Puente cannot run are skipped, logged, and named in the ``x-puente-skipped-tools`` header
(comma-separated types): the Response object's ``metadata`` belongs to the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from server.api.deps import PrincipalDep
from server.api.front_door import Call, Parsed, serve
from server.api.responses_api.answer import to_response
from server.api.responses_api.request import JSON, Converted, convert
from server.api.responses_api.stored import ResponseStore, item_page
from server.api.responses_api.stream import ResponseEvents, encode
from server.api.sse import SSEResponse
from server.api.wire import JSONResponse, error_response
from server.errors import InvalidRequest, PuenteError
from server.pipeline.pipeline import Answer, AnswerStream
from server.pipeline.request import ChatRequest, load_object

router = APIRouter()

SKIPPED_HEADER = "x-puente-skipped-tools"
_KEPT = frozenset({"response.completed", "response.incomplete"})


def store_of(request: Request) -> ResponseStore:
    """The app's one ``ResponseStore`` (it remembers when it last pruned), made on first use."""
    state = request.app.state
    stored: ResponseStore | None = getattr(state, "responses_store", None)
    if stored is None:
        runtime = state.runtime
        stored = ResponseStore(runtime.access.store, runtime.settings.config.responses)
        state.responses_store = stored
    return stored


class ResponsesDoor:
    """One request's door: it keeps the event sequence, so that an error after the stream began
    still ends it as ``response.failed`` with the right id and sequence number."""

    api = "responses"

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.converted: Converted | None = None
        self.events: ResponseEvents | None = None
        self.key_name: str | None = None

    async def parse(self, raw: bytes, call: Call) -> Parsed[Converted]:
        body = load_object(raw)
        self.key_name = call.principal.name
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if isinstance(previous, str):
            history = await self.store.history(previous, self.key_name)
        references = {item["id"]: item for item in history if isinstance(item.get("id"), str)}
        converted = convert(body, history=history, references=references)
        self.converted = converted
        return Parsed(ChatRequest.from_body(converted.chat), converted)

    async def render(self, parsed: Parsed[Converted], answer: Answer) -> JSON:
        response = to_response(parsed.state, answer.data)
        await self.store.save(parsed.state, response, self.key_name)
        return response

    async def frames(self, parsed: Parsed[Converted], stream: AnswerStream) -> AsyncIterator[bytes]:
        events = ResponseEvents(parsed.state)
        self.events = events

        async def chunks() -> AsyncIterator[JSON]:
            try:
                async for chunk in stream:
                    yield chunk.data
            except PuenteError as error:
                stream.fail(error)  # the request is counted as failed; the events say so
                raise

        async for event in events.events(chunks()):
            if event["type"] in _KEPT:
                # Stored before the client reads the end, so a next request that names this
                # one as ``previous_response_id`` as soon as it arrives finds it.
                await self.store.save(parsed.state, event["response"], self.key_name)
            yield encode(event)

    def error_response(self, error: PuenteError) -> Response:
        return error_response(error)

    def stream_error(self, error: PuenteError) -> bytes:
        """A failure outside the events' own handling (a drain cut-off at shutdown)."""
        if self.events is None:
            assert self.converted is not None
            self.events = ResponseEvents(self.converted)
        return encode(self.events.failed(error))


def _with_skipped(response: Response, converted: Converted | None) -> Response:
    if converted is None or not converted.skipped_tools:
        return response
    value = ",".join(converted.skipped_tools)
    if isinstance(response, SSEResponse):
        response.extra_headers = {**response.extra_headers, SKIPPED_HEADER: value}
    else:
        response.headers[SKIPPED_HEADER] = value
    return response


@router.post("/v1/responses", response_model=None)
async def create_response(request: Request) -> Response:
    door = ResponsesDoor(store_of(request))
    response = await serve(request, door)
    return _with_skipped(response, door.converted)


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(response_id: str, request: Request, principal: PrincipalDep) -> Response:
    stored = await store_of(request).get(response_id, principal.name)
    return JSONResponse(stored.response)


@router.get("/v1/responses/{response_id}/input_items", response_model=None)
async def list_input_items(
    response_id: str,
    request: Request,
    principal: PrincipalDep,
    *,
    order: Annotated[str, Query()] = "desc",
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = 20,
) -> Response:
    stored = await store_of(request).get(response_id, principal.name)
    return JSONResponse(item_page(stored.input_items, order=order, after=after, limit=limit))


@router.delete("/v1/responses/{response_id}", response_model=None)
async def delete_response(response_id: str, request: Request, principal: PrincipalDep) -> Response:
    await store_of(request).delete(response_id, principal.name)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


@router.post("/v1/responses/{response_id}/cancel", response_model=None)
async def cancel_response(response_id: str, request: Request, principal: PrincipalDep) -> Response:
    # Every response here is answered in the request that made it (no ``background``), so a
    # stored one has always finished; an unknown one is a 404 as for GET.
    await store_of(request).get(response_id, principal.name)
    raise InvalidRequest(
        "Only responses created with background=true can be cancelled; Puente runs none.",
        code="invalid_value",
    )
