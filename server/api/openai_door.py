"""What every front door in OpenAI's own dialect shares (chat, legacy completions, embeddings).

The pipeline's neutral shapes are OpenAI's, so such a door only parses its request: the answer
is relayed as it is, a stream chunk by chunk as ``data:`` frames ending in ``data: [DONE]``
(the usage chunk Puente asked for only when the client asked for it too), and errors use
OpenAI's envelope — before the stream, and as an ``error`` event after it began.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from starlette.responses import Response

from server.api.front_door import Parsed
from server.api.sse import DONE, data_frame, openai_stream_error
from server.api.wire import error_response
from server.errors import PuenteError
from server.pipeline.pipeline import Answer, AnswerStream
from server.pipeline.request import JSON

S = TypeVar("S")


class OpenAIDoor(Generic[S]):
    async def render(self, parsed: Parsed[S], answer: Answer) -> JSON:
        return answer.data

    async def frames(self, parsed: Parsed[S], stream: AnswerStream) -> AsyncIterator[bytes]:
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
