"""The front doors' POST routes without FastAPI's per-request work.

FastAPI answers every request through its router (each route's pattern tried in turn), its
request handler (dependency solving: query, header and cookie parameters, an exit stack) and its
exception middleware. The front doors need none of it: they take the raw ``Request`` and answer
every error themselves, in their own envelope (``server/api/front_door.py``). So a POST to one of
their paths goes straight to the same endpoint function; the routes stay declared on FastAPI's
routers, which is where they come from here and what the OpenAPI document (and the fuzzer that
reads it) shows. Anything else — other methods, other paths, an app served under a root path, a
browser's request when CORS is on — goes through FastAPI as before.

``Doors`` goes one step further: such a POST is answered by one callable straight from the ASGI
server (from the HTTP protocol itself under ``puente serve``, ``server/lifecycle/http_guard.py``),
which does what Puente's middleware does for it — the request's clock and id, the body limit —
without Starlette's and FastAPI's outer layers or a ``send`` wrapper per message, and sends the
answer as two ASGI messages with its header list, the request id in it, built once
(bench/DOOR.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.envelopes import error_response_for
from server.api.middleware import body_refusal, new_request_id, with_request_id
from server.api.sse import SSEResponse
from server.api.wire import JSONResponse
from server.errors import PayloadTooLarge, PuenteError
from server.lifecycle.http_guard import ANSWER, Answer
from server.observability.request_context import request_id, request_started
from server.pipeline.pipeline import ClientDisconnected
from server.pipeline.record import CLIENT_CLOSED

log = logging.getLogger("puente.http")

Endpoint = Callable[[Request], Awaitable[Response]]


def lanes(routers: Iterable[APIRouter], endpoints: Iterable[Endpoint]) -> dict[str, Endpoint]:
    """Path → endpoint for the POST routes of ``endpoints`` on ``routers`` (which the app
    includes without a prefix); fixed paths only."""
    wanted = set(endpoints)
    found = {
        route.path: route.endpoint
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and route.endpoint in wanted
        and route.methods == {"POST"}
        and "{" not in route.path
    }
    missing = wanted - set(found.values())
    if missing:  # a route renamed or given parameters: it must not silently leave the lane
        raise RuntimeError(f"not fixed POST routes: {sorted(e.__name__ for e in missing)}")
    return found


class DoorRequest(Request):
    """Starlette's request, its body read without an async generator and within ``limit``."""

    limit: int | None = None

    async def body(self) -> bytes:
        try:
            return self._body
        except AttributeError:
            pass
        chunks: list[bytes] = []
        seen = 0
        limit = self.limit
        receive = self._receive
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client left
                self._is_disconnected = True
                raise ClientDisconnected
            chunk = message.get("body", b"")
            if chunk:
                seen += len(chunk)
                if limit is not None and seen > limit:  # a chunked body past the limit
                    raise PayloadTooLarge(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._stream_consumed = True
        self._body = body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return body


async def _respond(endpoint: Endpoint, request: Request) -> Response:
    """``endpoint``'s answer; an exception it lets out answered as the app's handlers would."""
    try:
        return await endpoint(request)
    except PuenteError as error:
        return error_response_for(request.scope["path"], request.headers, error)
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    except Exception:
        log.exception("unhandled error on POST %s", request.scope["path"])
        bug = PuenteError("The server had an error processing your request.")
        return error_response_for(request.scope["path"], request.headers, bug)


class FastLane:
    """Pure ASGI, innermost: a POST to a lane's path is answered by its endpoint directly."""

    def __init__(self, app: ASGIApp, lanes: dict[str, Endpoint]) -> None:
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.lanes.get(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        response = await _respond(endpoint, DoorRequest(scope, receive, send))
        await response(scope, receive, send)


# The request headers a door's POST looks at before its endpoint does.
_SEEN = frozenset((b"x-request-id", b"content-encoding", b"content-length", b"origin"))


class Doors:
    """A front door's POST, from the ASGI server's hands to its answer (the module's docstring).

    ``whole`` answers what is not for the doors after all: a browser's request (``Origin``) when
    CORS is on, or an app served under a root path."""

    def __init__(
        self,
        whole: ASGIApp,
        app: FastAPI,
        lanes: dict[str, Endpoint],
        *,
        limit: int,
        cors: bool,
    ) -> None:
        self.whole = whole
        self.app = app
        self.lanes = lanes
        self.limit = limit
        self.cors = cors
        self.paths = frozenset(lanes)
        self.raw_paths = frozenset(path.encode() for path in lanes)
        """The paths as they come on the request line, for ``http_guard``'s protocol."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = {name: value for name, value in scope["headers"] if name in _SEEN}
        endpoint = self.lanes.get(scope["path"])
        if endpoint is None or scope.get("root_path") or (self.cors and b"origin" in seen):
            await self.whole(scope, receive, send)
            return
        scope["app"] = self.app  # what Starlette sets, and routes read (``request.app``)
        started = request_started.set(time.perf_counter())  # the request's clock starts here
        rid = new_request_id(seen.get(b"x-request-id"))
        token = request_id.set(rid)
        try:
            request = DoorRequest(scope, receive, send)
            request.limit = limit = self.limit
            refusal = body_refusal(
                seen.get(b"content-encoding"), seen.get(b"content-length"), limit
            )
            if refusal is None:
                response = await _respond(endpoint, request)
            else:  # before the body is read
                response = error_response_for(scope["path"], request.headers, refusal)
            raw_id = rid.encode()
            if not _answered_at_once(response, scope, raw_id):
                await _answer(response, scope, receive, send, raw_id)
        finally:
            request_id.reset(token)
            request_started.reset(started)


def _answered_at_once(response: Response, scope: Scope, raw_id: bytes) -> bool:
    """Whether ``response``, with ``x-request-id: raw_id``, went out in one call to the HTTP
    protocol (``http_guard.Answer``: a JSON answer under ``puente serve``)."""
    if type(response) is not JSONResponse or response.background is not None:
        return False
    extensions = scope.get("extensions")
    answer: Answer | None = extensions.get(ANSWER) if extensions else None
    if answer is None:
        return False  # another ASGI server
    lines = response.head_lines(raw_id)
    return lines is not None and answer(response.status_code, lines, response.body)


async def _answer(
    response: Response, scope: Scope, receive: Receive, send: Send, raw_id: bytes
) -> None:
    """Send ``response`` with ``x-request-id: raw_id``, as ASGI messages."""
    if isinstance(response, SSEResponse):
        response.request_id = raw_id  # in the head it sends
        await response(scope, receive, send)
        return
    if type(response).__call__ is not Response.__call__:  # some other kind: its own messages

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_request_id(message.get("headers", []), raw_id)
            await send(message)

        await response(scope, receive, send_with_id)
        return
    headers = response.raw_headers
    if any(name == b"x-request-id" for name, _ in headers):
        headers = with_request_id(headers, raw_id)
    else:
        headers = [*headers, (b"x-request-id", raw_id)]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
    if response.background is not None:
        await response.background()


class LaneApp(FastAPI):
    """FastAPI, with the doors' POSTs taken before its middleware stack (``doors``, which
    ``create_app`` builds; see the module's docstring)."""

    doors: Doors | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        doors = self.doors
        if (
            doors is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in doors.paths
            and not self.root_path
        ):
            await doors(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app with every layer (for what ``doors`` does not answer itself)."""
        await super().__call__(scope, receive, send)
