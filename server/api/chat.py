"""``POST /v1/chat/completions``: the pipeline's own dialect, so the door only relays."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.front_door import Call, Parsed, serve
from server.api.sse import DONE, data_frame, openai_stream_error
from server.api.wire import error_response
from server.errors import PuenteError
from server.pipeline.pipeline import Answer, AnswerStream
from server.pipeline.request import JSON, ChatRequest

router = APIRouter()


class ChatDoor:
    api = "chat"

    async def parse(self, raw: bytes, call: Call) -> Parsed[None]:
        return Parsed(ChatRequest.parse(raw), None)

    async def render(self, parsed: Parsed[None], answer: Answer) -> JSON:
        return answer.data

    async def frames(self, parsed: Parsed[None], stream: AnswerStream) -> AsyncIterator[bytes]:
        include_usage = parsed.request.include_usage
        async for chunk in stream:
            if chunk.is_usage_only and not include_usage:
                continue  # asked for by Puente to count tokens, not by the client
            yield data_frame(chunk.encode())
        yield DONE

    def error_response(self, error: PuenteError) -> Response:
        return error_response(error)

    def stream_error(self, error: PuenteError) -> bytes:
        return openai_stream_error(error)


DOOR = ChatDoor()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await serve(request, DOOR)
