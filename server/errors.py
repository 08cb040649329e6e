"""Errors a client can see, rendered in exactly one place as OpenAI's envelope.

    PuenteError                      500 internal_error
    ├── InvalidRequest               400 invalid_request_error (param names the field)
    │   └── MalformedJSON            400 invalid_request_error / invalid_json
    ├── Unauthorized                 401 authentication_error
    ├── PermissionDenied             403 permission_error
    ├── NotFound                     404 invalid_request_error
    │   └── ModelNotFound            404 invalid_request_error / model_not_found
    ├── MethodNotAllowed             405 invalid_request_error
    ├── PayloadTooLarge              413 invalid_request_error / request_too_large
    ├── UnsupportedEncoding          415 invalid_request_error / unsupported_content_encoding
    ├── RateLimited                  429 rate_limit_error (Retry-After)                 retryable
    ├── ServiceUnavailable           503 service_unavailable (Retry-After)              retryable
    └── UpstreamError                502 upstream_error
        ├── UpstreamStatusError      the upstream's own 4xx, status and body passed through
        │                            retryable: 408, 429 and 5xx (5xx become 502)
        ├── UpstreamConnectionError  502: refused, reset, DNS                           retryable
        ├── UpstreamProtocolError    502: the upstream answered something that is not the API
        └── UpstreamTimeout          504 timeout                                        retryable

Providers translate their client library's exceptions into this tree inside the provider
module, including while a stream is being iterated; the HTTP layer renders whatever reaches it
(a JSON body before a stream starts, an SSE error event after) and never sees a library error.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import orjson


class PuenteError(Exception):
    """Base of every error a client may see. ``kind`` is also the metrics label."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    kind: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def error_type(self) -> str:
        return self.type

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if tried again (later, elsewhere, or on a
        fallback model): upstream outages and overloads are, the client's own mistakes are not.
        ``server/resilience/chain.py`` retries and falls back on this alone, for every provider."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(PuenteError):
    status = 400
    type = "invalid_request_error"
    kind = "invalid_request"


class MalformedJSON(InvalidRequest):
    kind = "invalid_json"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_json")


class Unauthorized(PuenteError):
    status = 401
    type = "authentication_error"
    kind = "unauthorized"

    def __init__(self, message: str, *, code: str = "invalid_api_key") -> None:
        super().__init__(message, code=code)


class PermissionDenied(PuenteError):
    status = 403
    type = "permission_error"
    kind = "permission_denied"


class NotFound(PuenteError):
    status = 404
    type = "invalid_request_error"
    kind = "not_found"


class MethodNotAllowed(PuenteError):
    status = 405
    type = "invalid_request_error"
    kind = "method_not_allowed"


class ModelNotFound(NotFound):
    kind = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="model_not_found")

    @classmethod
    def named(cls, name: str) -> ModelNotFound:
        """The one answer for a model that is not configured *or* that the key may not use, so
        the catalogue does not leak through the difference."""
        return cls(f"The model '{name}' does not exist.")


class PayloadTooLarge(PuenteError):
    status = 413
    type = "invalid_request_error"
    kind = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Request body is larger than the limit of {limit} bytes.", code="request_too_large"
        )


class UnsupportedEncoding(PuenteError):
    """A compressed request body: Puente reads bodies as sent (as OpenAI's and Anthropic's APIs
    do), and compressed bytes read as JSON would only give a misleading parse error."""

    status = 415
    type = "invalid_request_error"
    kind = "unsupported_content_encoding"

    def __init__(self, encoding: str) -> None:
        super().__init__(
            f"Content-Encoding {encoding!r} is not supported: send the request body uncompressed.",
            code="unsupported_content_encoding",
        )


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never shorter than asked (2.5 s is 3) nor under 1."""
    return str(max(1, math.ceil(seconds)))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    return {"Retry-After": retry_after_header(retry_after)}


def param_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A validation error's location the way OpenAI names a parameter: ``messages[0].content``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class RateLimited(PuenteError):
    status = 429
    type = "rate_limit_error"
    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str = "rate_limit_exceeded",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, code=code, headers={**_retry_headers(retry_after), **(headers or {})}
        )
        self.retry_after = retry_after


class ServiceUnavailable(PuenteError):
    status = 503
    type = "service_unavailable"
    kind = "unavailable"
    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code, headers=_retry_headers(retry_after))
        self.retry_after = retry_after


class UpstreamError(PuenteError):
    """The upstream failed in a way that is not the client's fault."""

    status = 502
    type = "upstream_error"
    kind = "upstream"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = "upstream_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, headers=headers)


class UpstreamStatusError(UpstreamError):
    """An HTTP error status from the upstream.

    4xx statuses are the client's own mistakes as the upstream judged them: they pass through with
    their status and (where it is OpenAI-shaped) their error body. 5xx statuses become 502.
    """

    kind = "upstream_status"

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, headers=headers)
        self.upstream_status = upstream_status
        self._error_type = error_type

    @property
    def status_code(self) -> int:
        if 400 <= self.upstream_status < 500:
            return self.upstream_status
        return 502

    @property
    def error_type(self) -> str:
        if 400 <= self.upstream_status < 500 and self._error_type:
            return self._error_type
        if self.upstream_status == 429:
            return "rate_limit_error"
        if 400 <= self.upstream_status < 500:
            return "invalid_request_error"
        return self.type

    @property
    def retryable(self) -> bool:
        return self.upstream_status in (408, 429) or self.upstream_status >= 500


class UpstreamConnectionError(UpstreamError):
    kind = "connection"
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_unreachable")


class UpstreamProtocolError(UpstreamError):
    kind = "protocol"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_bad_response")


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    kind = "timeout"
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_timeout")
