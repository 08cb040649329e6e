"""``POST /v1/messages`` (also ``?beta=true``) and ``POST /v1/messages/count_tokens``.

The door translates (``request``, ``answer``, ``stream``, ``errors``); the shared driver
(``server/api/front_door.py``) does everything else, as for every front door. ``anthropic-version``
and ``anthropic-beta`` are accepted and need nothing: the chat path has no versions or betas.

A Claude model (without a persona) gets the client's body as it came, with its
``anthropic-version`` and ``anthropic-beta`` (``server/providers/anthropic_native.py``), and the
client gets Anthropic's own Message or events back; the pipeline still sees the neutral request
and answer, so keys, limits, retries, fallbacks (translated), metrics and usage apply.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.deps import authenticate, runtime_of
from server.api.front_door import Call, Parsed, serve
from server.api.messages import errors
from server.api.messages.answer import to_message
from server.api.messages.request import Target, load_body, thinking_enabled, to_chat
from server.api.messages.stream import Encoder, events
from server.api.sse import SSEResponse
from server.api.wire import JSONResponse
from server.errors import ModelNotFound, PuenteError
from server.lifecycle.runtime import Runtime
from server.observability.request_context import request_id
from server.pipeline.pipeline import Answer, AnswerStream
from server.pipeline.request import JSON, ChatRequest
from server.providers.anthropic_native import FORWARDED_HEADERS, NativeCompletion, NativeMessages

log = logging.getLogger("puente.messages")

router = APIRouter()


@dataclass(frozen=True, slots=True)
class State:
    """What the answer's translation needs from the request."""

    stop_sequences: list[str]
    thinking: bool


def target_of(runtime: Runtime, model: str) -> Target:
    """The kind of provider that will answer ``model`` (a persona's model for a persona), as far
    as is known before the pipeline resolves it; unknown models are the pipeline's 404."""
    snapshot = runtime.pipeline.snapshot
    persona = snapshot.personas.get(model)
    try:
        route = snapshot.catalog.resolve(persona.model if persona else model)
    except ModelNotFound:
        return Target()
    fallbacks = route.config.fallbacks
    if persona is not None and persona.config.fallbacks is not None:
        fallbacks = persona.config.fallbacks
    kinds = {route.kind}
    for name in fallbacks:
        try:
            kinds.add(snapshot.catalog.resolve(name).kind)
        except ModelNotFound:
            continue  # the pipeline skips it too
    # A persona's server-side messages live in the chat body only, so it is always translated.
    native = route.kind == "anthropic" and persona is None
    return Target(route.kind, vllm_only=kinds == {"vllm"}, native=native)


def chat_request(body: JSON, target: Target) -> ChatRequest:
    chat = to_chat(body, target)
    if chat.get("stream") and target.vllm_only:
        # vLLM counts as it streams, so message_start can carry the real input tokens; only
        # where no fallback could take the request to a server that refuses the option.
        chat["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return ChatRequest.from_body(chat)


class MessagesDoor:
    api = "messages"

    async def parse(self, raw: bytes, call: Call) -> Parsed[State]:
        body = load_body(raw)
        target = target_of(call.runtime, body["model"])
        request = chat_request(body, target)
        if target.native:
            headers = {h: call.headers[h] for h in FORWARDED_HEADERS if h in call.headers}
            request = NativeMessages.wrap(request, body, headers)
        state = State(list(body.get("stop_sequences") or []), thinking_enabled(body))
        return Parsed(request, state)

    async def render(self, parsed: Parsed[State], answer: Answer) -> JSON:
        if isinstance(answer.data, NativeCompletion):  # Anthropic's own Message, as it came
            return {**answer.data.message, "model": answer.model}
        state = parsed.state
        return to_message(answer.data, stop_sequences=state.stop_sequences, thinking=state.thinking)

    def frames(self, parsed: Parsed[State], stream: AnswerStream) -> AsyncIterator[bytes]:
        state = parsed.state
        encoder = Encoder(stream.model, state.stop_sequences, state.thinking)
        return events(aiter(stream), encoder)

    def error_response(self, error: PuenteError) -> Response:
        return errors.error_response(error)

    def stream_error(self, error: PuenteError) -> bytes:
        return errors.stream_error(error)


DOOR = MessagesDoor()


def _with_request_id(response: Response) -> Response:
    """Anthropic's SDKs read the id from ``request-id`` (Puente's own is ``x-request-id``)."""
    rid = request_id.get()
    if isinstance(response, SSEResponse):
        response.extra_headers = {**response.extra_headers, "request-id": rid}
    else:
        response.headers["request-id"] = rid
    return response


@router.post("/v1/messages", response_model=None)
async def messages(request: Request) -> Response:
    return _with_request_id(await serve(request, DOOR))


@router.post("/v1/messages/count_tokens", response_model=None)
async def count_tokens(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        principal = await authenticate(request)
        body = load_body(await request.body(), counting=True)
        model = body["model"]
        if not principal.may_use(model):
            raise ModelNotFound.named(model)
        target = target_of(runtime, model)
        chat = chat_request({**body, "max_tokens": 1, "stream": False}, target)
        if target.native:
            headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
            chat = NativeMessages.wrap(chat, body, headers)
        count, exact = await runtime.pipeline.count_input(chat)
    except PuenteError as error:
        return errors.error_response(error)
    how = "exact" if exact else "estimate"
    headers = {"request-id": request_id.get(), "x-puente-token-count": how}
    return JSONResponse({"input_tokens": count}, headers=headers)
