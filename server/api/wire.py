"""OpenAI's shapes on the wire: JSON bodies and the error envelope."""

from __future__ import annotations

import re
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
    in the same order: the caller's, then ``content-length``, then ``content-type``.

    The list is built when something asks for it: a front door's answer under ``puente serve``
    goes out as one block of header lines (``head_lines``) and never needs it."""

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
        self._lines = json_lines(headers, len(body))
        self._raw: list[tuple[bytes, bytes]] | None = None
        self._given: Mapping[str, str] | None = None
        if self._lines is None:  # the list, as before (and any error encoding it, here)
            self._raw = json_headers(body, headers)
        elif headers:  # a copy, as the list would be: the caller's dict may change afterwards
            self._given = dict(headers)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        raw = self._raw
        if raw is None:
            raw = self._raw = json_headers(self.body, self._given)
        return raw

    @raw_headers.setter
    def raw_headers(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def head_lines(self, raw_id: bytes) -> bytes | None:
        """The header lines of this answer, ``x-request-id: raw_id`` last, as HTTP/1.1 writes
        them: the headers ``raw_headers`` plus that id would give, in the same order, names
        lowercased. None where only the list will do (``json_lines``), or once the list was
        asked for (and perhaps changed: Anthropic's ``request-id`` is added to it)."""
        lines = self._lines
        if lines is None or self._raw is not None:
            return None
        return b"%sx-request-id: %s\r\n" % (lines, raw_id)


# A plain lowercase token, the names Puente gives (uvicorn refuses more in a name, ``HEADER_RE``
# in its httptools protocol, but allows some that need a second look); what uvicorn refuses in
# a value (``HEADER_VALUE_RE``). Checked before encoding: latin-1 turns each character into the
# byte of the same number, and fails on any other, as the list's encoding does.
_PLAIN_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Names that leave an answer to the list: its framing, the connection's handling, the id.
_LIST_ONLY = frozenset(
    ("content-length", "content-type", "transfer-encoding", "connection", "x-request-id")
)


def json_lines(headers: Mapping[str, str] | None, length: int) -> bytes | None:
    """The header lines (``name: value`` and CRLF each) of a JSON answer of ``length`` bytes
    with ``headers``: what ``json_headers`` lists, in its order, as one text. None, and the list
    is used, when a name is in ``_LIST_ONLY`` or is not a plain token once lowercased, or a value
    has a character the HTTP layer refuses (it then refuses the list, as it always did).

    The check is a search or two, not two per header: the names joined by ``-`` and the values
    joined by a tab, each allowed where it is put, so the joined text is refused exactly when
    one of its parts would be."""
    if not headers:
        return b"content-length: %d\r\ncontent-type: application/json\r\n" % length
    if not _PLAIN_NAME.fullmatch("-".join(headers)):
        lowered = {name.lower(): value for name, value in headers.items()}  # Retry-After …
        if len(lowered) != len(headers) or not _PLAIN_NAME.fullmatch("-".join(lowered)):
            return None
        headers = lowered
    if not _LIST_ONLY.isdisjoint(headers) or _BAD_VALUE.search("\t".join(headers.values())):
        return None
    lines = "\r\n".join(map(": ".join, headers.items()))
    tail = f"\r\ncontent-length: {length}\r\ncontent-type: application/json\r\n"
    return (lines + tail).encode("latin-1")


def json_headers(
    body: bytes | memoryview, headers: Mapping[str, str] | None
) -> list[tuple[bytes, bytes]]:
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
