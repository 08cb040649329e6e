"""``POST /v1/chat/completions``: the pipeline's own dialect, so the door only relays."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.front_door import Call, Parsed, serve
from server.api.openai_door import OpenAIDoor
from server.pipeline.request import ChatRequest

router = APIRouter()


class ChatDoor(OpenAIDoor[None]):
    api = "chat"

    async def parse(self, raw: bytes, call: Call) -> Parsed[None]:
        return Parsed(ChatRequest.parse(raw), None)


DOOR = ChatDoor()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await serve(request, DOOR)
