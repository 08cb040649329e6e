"""Puente's errors in Anthropic's envelope (https://docs.anthropic.com/en/api/errors)::

    {"type": "error", "error": {"type": "not_found_error", "message": "…"}, "request_id": "…"}

    PuenteError                 500 api_error
    ├── InvalidRequest          400 invalid_request_error
    ├── Unauthorized            401 authentication_error
    ├── PermissionDenied        403 permission_error
    ├── NotFound                404 not_found_error
    ├── MethodNotAllowed        405 invalid_request_error
    ├── PayloadTooLarge         413 request_too_large
    ├── RateLimited             429 rate_limit_error
    ├── ServiceUnavailable      529 overloaded_error (Puente's capacity, an engine loading, a drain)
    └── UpstreamError           502 api_error
        ├── UpstreamStatusError its 4xx by status (429 rate_limit_error); 529 overloaded_error
        └── UpstreamTimeout     504 timeout_error

The status decides which exception the anthropic SDK raises (``NotFoundError``,
``OverloadedError`` …); headers (``Retry-After``, ``x-should-retry``) are kept.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from server.api.sse import event_frame
from server.api.wire import json_bytes_response
from server.errors import (
    PayloadTooLarge,
    PuenteError,
    ServiceUnavailable,
    UpstreamStatusError,
    UpstreamTimeout,
)
from server.observability.request_context import request_id

OVERLOADED = 529

# Anthropic's error type for each client-error status.
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}


def status_and_type(error: PuenteError) -> tuple[int, str]:
    if isinstance(error, ServiceUnavailable):
        return OVERLOADED, TYPES[OVERLOADED]
    if isinstance(error, UpstreamStatusError) and error.upstream_status in (OVERLOADED, 503):
        return OVERLOADED, TYPES[OVERLOADED]
    if isinstance(error, UpstreamTimeout):
        return 504, TYPES[504]
    if isinstance(error, PayloadTooLarge):
        return 413, TYPES[413]
    status = error.status_code
    return status, TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(error: PuenteError) -> bytes:
    _, kind = status_and_type(error)
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": error.message},
            "request_id": request_id.get(),
        }
    )


def error_response(error: PuenteError) -> Response:
    status, _ = status_and_type(error)
    headers = {**error.headers, "request-id": request_id.get()}
    return json_bytes_response(error_body(error), status, headers)


def stream_error(error: PuenteError) -> bytes:
    """How a stream that failed after it began ends: Anthropic's ``error`` event."""
    return event_frame("error", error_body(error))
