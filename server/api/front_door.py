"""The one driver behind every front door.

A front door is a dialect: it parses its wire format into the pipeline's neutral request, and
renders the neutral answer (whole, streamed, or an error) back into its wire format. ``serve``
does everything else once for all of them: authenticate, hand the request to a pipeline
``Exchange`` (which owns admission, personas, resolution, retries and fallbacks, the provider
call, the farewell and the request's record), cancel the work when the client leaves, and send
the answer — JSON, or SSE through ``server/api/sse.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from server.access import Principal
from server.api.deps import runtime_of
from server.api.sse import SSEResponse, wait_disconnect
from server.api.wire import JSONResponse, model_header
from server.errors import PuenteError
from server.lifecycle.http_guard import DISCONNECT, DisconnectHook
from server.lifecycle.runtime import Runtime
from server.observability.request_context import request_id
from server.pipeline.pipeline import Answer, AnswerStream, ClientDisconnected
from server.pipeline.record import CLIENT_CLOSED
from server.pipeline.request import JSON, UpstreamRequest

log = logging.getLogger("puente.http")

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Call:
    """What a front door may look at while parsing: the app, the caller, the HTTP headers."""

    runtime: Runtime
    principal: Principal
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Parsed(Generic[S]):
    """A front door's parse: the neutral request, and what the door needs again to answer."""

    request: UpstreamRequest
    state: S
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers the answer carries because of what the request asked (whole or streamed)."""


class FrontDoor(Protocol[S]):
    api: str
    """The label of this API in logs and request records."""

    async def parse(self, raw: bytes, call: Call) -> Parsed[S]: ...

    async def render(self, parsed: Parsed[S], answer: Answer) -> JSON: ...

    def frames(self, parsed: Parsed[S], stream: AnswerStream) -> AsyncIterator[bytes]:
        """The stream in this dialect, its terminator included. A ``PuenteError`` raised while
        iterating ``stream`` may be left to propagate: ``stream_error`` then ends the stream."""
        ...

    def error_response(self, error: PuenteError) -> Response: ...

    def stream_error(self, error: PuenteError) -> bytes: ...


async def until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` but cancel it as soon as the client disconnects (which, for an upstream
    call, closes the upstream connection and lets the engine free its KV cache).

    ``work`` runs in this task. Under ``puente serve`` the HTTP protocol calls back when the
    client leaves (``http_guard.DisconnectHook``); elsewhere one watcher task awaits it (a task
    for the work too and an ``asyncio.wait`` on both cost more than the rest of the route)."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    def gone() -> None:
        nonlocal left
        left = True
        task.cancel()

    extensions = request.scope.get("extensions")
    hook: DisconnectHook | None = extensions.get(DISCONNECT) if extensions else None
    watcher: asyncio.Future[None] | None = None
    if hook is None:

        async def watch() -> None:
            await wait_disconnect(request.receive)
            gone()

        watcher = asyncio.ensure_future(watch())
    elif not hook.watch(gone):
        work.close()  # never started
        raise ClientDisconnected
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise  # cancelled from elsewhere (shutdown): not this watcher's to turn into anything
        task.uncancel()
        raise ClientDisconnected from None
    finally:
        if watcher is not None:
            watcher.cancel()
        else:
            assert hook is not None
            hook.unwatch(gone)


# ``x-puente-model`` values already encoded: the same few names answer nearly every request.
# Wildcard names come from clients, so the memo is emptied when it grows past a bound.
_MODEL_HEADERS: dict[str, str] = {}
_MODEL_HEADERS_MAX = 256


def _model_header(name: str) -> str:
    value = _MODEL_HEADERS.get(name)
    if value is None:
        if len(_MODEL_HEADERS) >= _MODEL_HEADERS_MAX:
            _MODEL_HEADERS.clear()
        value = _MODEL_HEADERS[name] = model_header(name)
    return value


def _headers(headers: dict[str, str], parsed: Parsed[Any]) -> dict[str, str]:
    out = {**headers, **parsed.headers}
    if "x-puente-model" in out:
        out["x-puente-model"] = _model_header(out["x-puente-model"])
    return out


async def serve(request: Request, door: FrontDoor[Any]) -> Response:
    runtime = runtime_of(request)
    try:
        # ``deps.authenticate``'s work without its frame (the route has the runtime already).
        principal = await runtime.access.authenticate(request.headers)
    except PuenteError as error:
        return door.error_response(error)
    exchange = runtime.pipeline.exchange(
        api=door.api, request_id=request_id.get(), principal=principal
    )
    try:
        async with exchange:
            parsed = await door.parse(
                await request.body(), Call(runtime, principal, request.headers)
            )
            if parsed.request.stream:
                stream = await until_disconnect(request, exchange.open_stream(parsed.request))
                frames = door.frames(parsed, stream)
                headers = _headers(exchange.headers, parsed)
                send_timeout = runtime.pipeline.snapshot.config.server.send_timeout
                return SSEResponse(stream, frames, door.stream_error, headers, send_timeout)
            answer = await until_disconnect(request, exchange.complete(parsed.request))
            body = await door.render(parsed, answer)
    except PuenteError as error:
        return door.error_response(error)
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    except Exception:
        # A bug: the exchange counted it as a 500; the client gets an envelope, not a traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return door.error_response(PuenteError("The server had an error processing your request."))
    return JSONResponse(body, headers=_headers(exchange.headers, parsed))
