"""``POST /v1/embeddings``: OpenAI's embeddings API, on the shared driver (``front_door.serve``).

The body goes upstream as the client sent it (``model`` swapped): OpenAI-compatible engines take
it as is, and the Gemini provider translates it. The door's own work is checking ``input`` and
the known fields, and answering vectors in the ``encoding_format`` asked for (``float``, the
default, or ``base64``: little-endian float32, which is what the openai SDK decodes), whatever
the upstream answered in. Embeddings never stream.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import Field, StrictInt, StrictStr
from starlette.responses import Response

from server.api.front_door import Call, Parsed, serve
from server.api.openai_door import OpenAIDoor
from server.api.text_inputs import Schema, check_text_input, validate
from server.pipeline.pipeline import Answer
from server.pipeline.request import JSON, UpstreamRequest, load_object
from server.providers.embeddings import encoded_as

router = APIRouter()

EncodingFormat = Literal["float", "base64"]


class _EmbeddingsSchema(Schema):
    model: Annotated[StrictStr, Field(min_length=1)]
    encoding_format: EncodingFormat | None = None
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: StrictStr | None = None


class EmbeddingsDoor(OpenAIDoor[EncodingFormat]):
    api = "embeddings"

    async def parse(self, raw: bytes, call: Call) -> Parsed[EncodingFormat]:
        body = load_object(raw)
        validate(_EmbeddingsSchema, body)
        check_text_input(body.get("input"), "input")
        body.pop("stream", None)  # not an embeddings field: nothing streams here
        request = UpstreamRequest(
            body=body, model=body["model"], upstream_model=body["model"], operation="embeddings"
        )
        return Parsed(request, body.get("encoding_format") or "float")

    async def render(self, parsed: Parsed[EncodingFormat], answer: Answer) -> JSON:
        return encoded_as(answer.data, parsed.state)


DOOR = EmbeddingsDoor()


@router.post("/v1/embeddings", response_model=None)
async def embeddings(request: Request) -> Response:
    return await serve(request, DOOR)
