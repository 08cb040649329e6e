"""OpenAI's shapes on the wire: JSON bodies and the error envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from server.errors import PuenteError

_JSON = b"application/json"
_FRAMING = frozenset((b"content-length", b"content-type"))


class JSONResponse(Response):
    """Starlette's response with its header list built in one pass: every answer of the front
    doors is one of these, and ``Response.init_headers`` (a list, a second list of names, two
    membership tests) was a visible share of a request's CPU (bench/DOOR.md). The same headers,
    in the same order: the caller's, then ``content-length``, then ``content-type``."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self._fill(orjson.dumps(content), status_code, headers, background)

    def _fill(
        self,
        body: bytes,
        status_code: int,
        headers: Mapping[str, str] | None,
        background: BackgroundTask | None,
    ) -> None:
        self.status_code = status_code
        self.background = background
        self.body = body
        self.raw_headers = json_headers(body, headers)


def json_headers(body: bytes, headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    """What ``Response.init_headers`` makes for a JSON ``body`` with ``headers``."""
    raw = []
    framing = False  # the caller set content-length or content-type itself (never, in Puente)
    for name, value in headers.items() if headers else ():
        key = name.lower().encode("latin-1")
        framing = framing or key in _FRAMING
        raw.append((key, value.encode("latin-1")))
    given = {key for key, _ in raw} if framing else ()
    if b"content-length" not in given:
        raw.append((b"content-length", b"%d" % len(body)))
    if b"content-type" not in given:
        raw.append((b"content-type", _JSON))
    return raw


def json_bytes_response(
    body: bytes, status_code: int, headers: Mapping[str, str] | None = None
) -> Response:
    """A response whose JSON ``body`` is already encoded."""
    response = JSONResponse.__new__(JSONResponse)
    response._fill(body, status_code, headers, None)
    return response


def model_header(name: str) -> str:
    """``x-puente-model``: which model answered. Wildcard names come from the client, so anything
    outside printable ASCII is percent-encoded rather than trusted into a header."""
    return quote(name, safe="/:._-+@*")


def error_response(error: PuenteError) -> Response:
    """An error in OpenAI's envelope, with its status and headers (``Retry-After`` …)."""
    return json_bytes_response(error.to_json(), error.status_code, error.headers)
