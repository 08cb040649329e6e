"""``POST /v1/completions``: OpenAI's legacy text completions, on the shared driver.

A passthrough: vLLM and OpenAI-compatible upstreams, and OpenAI itself (its instruct models),
take the body as the client sent it (``model`` swapped), so ``prompt`` as a string, a list or
token ids, ``suffix``, ``echo``, ``logprobs``, ``best_of``, ``n`` and ``stop`` mean what the
upstream makes of them. Chat-only vendors (Anthropic, Gemini) are not translated: the pipeline
answers 400 naming ``/v1/chat/completions`` (README "Embeddings and legacy completions").
Personas answer chat only. A stream is relayed chunk by chunk; its usage chunk reaches the client
only when it asked (``stream_options.include_usage``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool, StrictInt, StrictStr
from starlette.responses import Response

from server.api.front_door import Call, Parsed, serve
from server.api.openai_door import OpenAIDoor
from server.api.text_inputs import Schema, check_text_input, validate
from server.pipeline.request import UpstreamRequest, load_object

router = APIRouter()


class _StreamOptions(Schema):
    include_usage: StrictBool | None = None


class _CompletionsSchema(Schema):
    model: Annotated[StrictStr, Field(min_length=1)]
    suffix: StrictStr | None = None
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    user: StrictStr | None = None


class CompletionsDoor(OpenAIDoor[None]):
    api = "completions"

    async def parse(self, raw: bytes, call: Call) -> Parsed[None]:
        body = load_object(raw)
        validate(_CompletionsSchema, body)
        check_text_input(body.get("prompt"), "prompt")
        options = body.get("stream_options") or {}
        request = UpstreamRequest(
            body=body,
            model=body["model"],
            upstream_model=body["model"],
            operation="completions",
            stream=bool(body.get("stream")),
            include_usage=bool(options.get("include_usage")),
        )
        return Parsed(request, None)


DOOR = CompletionsDoor()


@router.post("/v1/completions", response_model=None)
async def completions(request: Request) -> Response:
    return await serve(request, DOOR)
