"""Pure ASGI middleware: request ids, the body size limit and CORS.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and client disconnects pass
through untouched and context variables set here are seen by the handlers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from random import getrandbits

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.envelopes import error_response_for
from server.config import CorsConfig
from server.errors import PayloadTooLarge, PuenteError, UnsupportedEncoding
from server.observability.request_context import request_id, request_started

Header = tuple[bytes, bytes]

_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def new_request_id(given: bytes | None) -> str:
    """The client's ``X-Request-Id`` when it is a sane token, else 128 random bits in hex.

    From Python's PRNG rather than ``os.urandom`` (a system call per request): an id needs to be
    unique, not unguessable, and it grants nothing."""
    if given:
        rid = given.decode("latin-1")
        if _VALID_ID.match(rid):
            return rid
    return getrandbits(128).to_bytes(16, "big").hex()  # 32 hex digits, in half the time of a format


def body_refusal(encoding: bytes | None, declared: bytes | None, limit: int) -> PuenteError | None:
    """Why a body must be refused before it is read, from its ``Content-Encoding`` and
    ``Content-Length``: compressed (415) or declared over ``limit`` bytes (413)."""
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        return UnsupportedEncoding(encoding.decode("latin-1")[:40])
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return PayloadTooLarge(limit)
    return None


class RequestIdMiddleware:
    """Accepts a client's ``X-Request-Id`` (when it is a sane token) or makes one, puts it in the
    logging context and on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = request_started.set(time.perf_counter())  # the request's clock starts here
        rid = new_request_id(_header(scope, b"x-request-id"))
        token = request_id.set(rid)
        raw_id = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_request_id(message.get("headers", []), raw_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            request_started.reset(started)


def with_request_id(headers: Iterable[tuple[bytes, bytes]], raw_id: bytes) -> list[Header]:
    """``headers`` with ``x-request-id: raw_id`` as its only request id."""
    out = [h for h in headers if h[0].lower() != b"x-request-id"]
    out.append((b"x-request-id", raw_id))
    return out


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413, by Content-Length or while reading a chunked
    body, before the handler holds it all in memory; and compressed bodies with 415."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        refusal = body_refusal(
            _header(scope, b"content-encoding"), _header(scope, b"content-length"), self.limit
        )
        if refusal is not None:
            await _refuse(scope, receive, send, refusal)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, error: PuenteError) -> None:
    """Answer ``error`` in the caller's envelope before the body is read."""
    request = Request(scope)
    response = error_response_for(request.url.path, request.headers, error)
    await response(scope, receive, send)


_CORS_METHODS = b"GET, POST, DELETE, OPTIONS"
# What a browser app may read of an answer beyond the basics: for retries and rate limits.
_CORS_EXPOSE = b"x-request-id, retry-after, x-should-retry, x-ratelimit-limit-requests, " + (
    b"x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
    b"x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-puente-model, "
    b"x-puente-skipped-tools, x-puente-token-count, request-id"
)


class CorsMiddleware:
    """Cross-origin requests from the browser origins in ``server.cors.allow_origins``.

    Only listed origins get CORS headers (``*`` lists every origin); a preflight from one is
    answered here (204), before authentication, as browsers send preflights without keys. No
    credentials mode: browser apps send their key in ``Authorization``, not in cookies.
    """

    def __init__(self, app: ASGIApp, config: CorsConfig) -> None:
        self.app = app
        self.any_origin = "*" in config.allow_origins
        self.origins = frozenset(o.encode() for o in config.allow_origins)
        self.any_header = "*" in config.allow_headers
        self.headers = ", ".join(config.allow_headers).encode()
        self.max_age = str(config.max_age).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or not (self.any_origin or origin in self.origins):
            await self.app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        wanted = _header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and wanted is not None:
            asked = _header(scope, b"access-control-request-headers") or b""
            headers = [
                *allow,
                (b"access-control-allow-methods", _CORS_METHODS),
                (b"access-control-allow-headers", asked if self.any_header else self.headers),
                (b"access-control-max-age", self.max_age),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *allow,
                    (b"access-control-expose-headers", _CORS_EXPOSE),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)
