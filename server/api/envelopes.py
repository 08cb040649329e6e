"""Which error envelope an answer gets when the error is raised outside a front door (a route
that does not exist, a body over the size limit, a validation error FastAPI found): Anthropic's
for the Messages API (``/v1/messages…``, and ``/v1/models`` asked with ``anthropic-version``, as
the anthropic SDK does), OpenAI's for everything else."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.api.messages import errors as anthropic_errors
from server.api.wire import error_response
from server.errors import PuenteError, ServiceUnavailable


def speaks_anthropic(path: str, headers: Mapping[str, str]) -> bool:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return path.startswith("/v1/models") and "anthropic-version" in headers


def error_response_for(path: str, headers: Mapping[str, str], error: PuenteError) -> Response:
    if speaks_anthropic(path, headers):
        return anthropic_errors.error_response(error)
    return error_response(error)


async def over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past ``server.http.max_connections`` (``server/lifecycle/http_guard.py``): 503
    in the caller's envelope (Anthropic's 529 ``overloaded_error`` on the Messages API), with
    ``Retry-After``, which the SDKs honour when they retry; the connection is closed after it."""
    error = ServiceUnavailable(
        "Puente is at its connection limit; retry shortly.", retry_after=1, code="overloaded"
    )
    response = error_response_for(scope.get("path", ""), Headers(scope=scope), error)
    response.headers["connection"] = "close"
    await response(scope, receive, send)
