"""The front doors' POST routes without FastAPI's per-request work.

FastAPI answers every request through its router (each route's pattern tried in turn), its
request handler (dependency solving: query, header and cookie parameters, an exit stack) and its
exception middleware. The front doors need none of it: they take the raw ``Request`` and answer
every error themselves, in their own envelope (``server/api/front_door.py``). So a POST to one of
their paths goes straight to the same endpoint function; the routes stay declared on FastAPI's
routers, which is where they come from here and what the OpenAPI document (and the fuzzer that
reads it) shows. Anything else — other methods, other paths, an app served under a root path —
goes through FastAPI as before.

``LaneApp`` goes one step further: such a POST enters Puente's own middleware (request id, body
limit) straight from the ASGI server, without Starlette's and FastAPI's outer layers (error
middleware, telemetry and body-limit hooks, each one more call and one more ``send`` wrapper per
message), which the lane never needed: it answers every exception itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.envelopes import error_response_for
from server.errors import PuenteError

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
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except PuenteError as error:  # as the app's exception handlers answer it
            response = error_response_for(scope["path"], request.headers, error)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            bug = PuenteError("The server had an error processing your request.")
            response = error_response_for(scope["path"], request.headers, bug)
        await response(scope, receive, send)


class LaneApp(FastAPI):
    """FastAPI, with the lane's POSTs taken before its middleware stack (``doors``: the lane
    inside Puente's middleware, which ``create_app`` builds; see the module's docstring)."""

    doors: ASGIApp | None = None
    door_paths: frozenset[str] = frozenset()
    cors: bool = False
    """Whether CORS is configured: a browser's request (``Origin``) then takes the whole stack,
    where the CORS middleware is."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        doors = self.doors
        if (
            doors is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self.door_paths
            and not scope.get("root_path")
            and not self.root_path
            and not (self.cors and any(name == b"origin" for name, _ in scope["headers"]))
        ):
            scope["app"] = self  # what Starlette sets, and routes read (``request.app``)
            await doors(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app with every layer (for the lane inside ``doors``: a path it does not know)."""
        await super().__call__(scope, receive, send)
