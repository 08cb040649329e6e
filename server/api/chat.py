"""``POST /v1/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.access import PrincipalDep
from server.api.wire import (
    CLIENT_CLOSED,
    ClientDisconnected,
    JSONResponse,
    SSEResponse,
    error_response,
    model_header,
    until_disconnect,
)
from server.errors import PuenteError
from server.lifecycle.runtime import RuntimeDep
from server.observability.request_context import request_id
from server.pipeline.pipeline import RequestRecord
from server.pipeline.request import ChatRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    gateway = runtime.gateway
    record = RequestRecord(request_id=request_id.get(), principal=principal.name)
    try:
        chat = ChatRequest.parse(await request.body())
        record.stream = chat.stream
        # 404 for a model the key may not use, 429 over limits; else its x-ratelimit-* headers
        limit_headers = await principal.admit(chat.model)
        if chat.stream:
            stream = await until_disconnect(request, gateway.open_stream(chat, record))
            return SSEResponse(stream, lambda: gateway.finish(record), limit_headers)
        data = await until_disconnect(request, gateway.complete(chat, record))
    except PuenteError as error:
        record.fail(error)
        gateway.finish(record)
        return error_response(error)
    except ClientDisconnected:
        record.status = CLIENT_CLOSED
        gateway.finish(record)
        return Response(status_code=CLIENT_CLOSED)
    gateway.finish(record)
    headers = {"x-puente-model": model_header(record.answered_by), **limit_headers}
    return JSONResponse(data, headers=headers)
