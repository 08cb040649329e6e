"""OpenAI's shapes on the wire: JSON bodies and the error envelope."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response

from server.errors import PuenteError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def model_header(name: str) -> str:
    """``x-puente-model``: which model answered. Wildcard names come from the client, so anything
    outside printable ASCII is percent-encoded rather than trusted into a header."""
    return quote(name, safe="/:._-+@*")


def error_response(error: PuenteError) -> Response:
    """An error in OpenAI's envelope, with its status and headers (``Retry-After`` …)."""
    return Response(
        error.to_json(),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )
