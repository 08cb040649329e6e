"""Which error envelope an answer gets when the error is raised outside a front door (a route
that does not exist, a body over the size limit, a validation error FastAPI found): Anthropic's
for the Messages API (``/v1/messages…``, and ``/v1/models`` asked with ``anthropic-version``, as
the anthropic SDK does), OpenAI's for everything else."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from server.api.messages import errors as anthropic_errors
from server.api.wire import error_response
from server.errors import PuenteError


def speaks_anthropic(path: str, headers: Mapping[str, str]) -> bool:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return path.startswith("/v1/models") and "anthropic-version" in headers


def error_response_for(path: str, headers: Mapping[str, str], error: PuenteError) -> Response:
    if speaks_anthropic(path, headers):
        return anthropic_errors.error_response(error)
    return error_response(error)
