"""The vendors' SDK exceptions, translated into ``server.errors`` in this one place.

Each SDK gets a table from exception class to a translation; a class not listed is found through
its bases. ``tests/test_cloud_errors.py`` walks every exception class each SDK exports and fails if
one is not listed itself, so a new SDK release that adds an error cannot slip through unnoticed.

What a client sees, whichever vendor answered:

    vendor said                        Puente answers
    bad request (400, 413, 422 …)      the same status, the vendor's message (key redacted)
    bad API key (401; Gemini 400       502 upstream_error / upstream_auth_failed: Puente's own
      API_KEY_INVALID), permission       credentials were refused, not the client's
      (403)
    not found (404)                    404 invalid_request_error
    rate limited (429)                 429 rate_limit_error, Retry-After passed on
    overloaded (503, Anthropic 529)    503 service_unavailable, Retry-After passed on
    vendor timeout (408, 504)          504 timeout
    other 5xx                          502 upstream_error
    connection refused / reset         502 upstream_error / upstream_unreachable
    no answer within the timeout       504 timeout
    an answer that is not the API      502 upstream_error / upstream_bad_response
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai
import pydantic
from google.genai import errors as genai_errors

from server.errors import (
    PuenteError,
    ServiceUnavailable,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from server.providers.redact import Redactor
from server.providers.upstream_errors import (
    auth_failed,
    brief,
    retry_after,
    retry_after_header,
    seconds,
)

log = logging.getLogger("puente.upstream")


@dataclass(frozen=True, slots=True)
class ErrorContext:
    vendor: str
    """``OpenAI``, ``Anthropic``, ``Gemini``: named in messages so users know who refused."""
    model: str
    secrets: tuple[str, ...] = ()

    def redact(self, text: str) -> str:
        return Redactor(self.secrets)(text)


Translate = Callable[[Any, ErrorContext], PuenteError]


# -- shared ---------------------------------------------------------------------------------------


def from_status(
    ctx: ErrorContext,
    status: int,
    message: str | None,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    wait: float | None = None,
) -> PuenteError:
    """A vendor's HTTP error status (or its equivalent inside a stream) as Puente's error."""
    said = brief(ctx.redact(message or f"HTTP {status}"))
    text = f"{ctx.vendor}: {said}"
    if status in (401, 403):
        return auth_failed(ctx.vendor, ctx.model, status)
    if status == 429:
        return UpstreamStatusError(
            429,
            text,
            error_type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=retry_after_header(wait),
        )
    if status in (503, 529):
        return ServiceUnavailable(text, retry_after=wait, code="overloaded")
    if status in (408, 504):
        return UpstreamTimeout(text)
    if 400 <= status < 500:
        return UpstreamStatusError(
            status, text, error_type="invalid_request_error", code=code, param=param
        )
    return UpstreamStatusError(status if status >= 500 else 502, text, code=code)


def timeout(exc: BaseException, ctx: ErrorContext) -> PuenteError:
    return UpstreamTimeout(f"{ctx.vendor} did not answer for model '{ctx.model}' in time.")


def connection(exc: BaseException, ctx: ErrorContext) -> PuenteError:
    if isinstance(exc.__cause__, httpx2.DecodingError):
        # The openai and anthropic SDKs wrap every failure while reading an answer as a
        # connection error, the upstream limits' refusal of an oversized body included.
        return protocol(exc.__cause__, ctx)
    log.warning("%s connection failed for %s: %s", ctx.vendor, ctx.model, type(exc).__name__)
    return UpstreamConnectionError(f"{ctx.vendor} could not be reached for model '{ctx.model}'.")


def protocol(exc: BaseException, ctx: ErrorContext) -> PuenteError:
    log.warning("%s answered off-protocol for %s: %s", ctx.vendor, ctx.model, type(exc).__name__)
    return UpstreamProtocolError(
        f"{ctx.vendor} answered model '{ctx.model}' with something that is not its API."
    )


def not_applicable(exc: BaseException, ctx: ErrorContext) -> PuenteError:
    """SDK features Puente does not use (webhooks, websockets, credential files, helpers)."""
    log.error("%s SDK raised %s for %s", ctx.vendor, type(exc).__name__, ctx.model)
    return UpstreamError(f"{ctx.vendor} could not be used for model '{ctx.model}'.")


# -- httpx2 (raised bare by google-genai, wrapped by the other two) -------------------------------

HTTPX2: dict[type[BaseException], Translate] = {
    httpx2.TimeoutException: timeout,
    httpx2.ConnectTimeout: timeout,
    httpx2.ReadTimeout: timeout,
    httpx2.WriteTimeout: timeout,
    httpx2.PoolTimeout: timeout,
    httpx2.HTTPError: connection,
    httpx2.RequestError: connection,
    httpx2.TransportError: connection,
    httpx2.NetworkError: connection,
    httpx2.ConnectError: connection,
    httpx2.ReadError: connection,
    httpx2.WriteError: connection,
    httpx2.CloseError: connection,
    httpx2.ProxyError: connection,
    httpx2.UnsupportedProtocol: connection,
    httpx2.ProtocolError: connection,
    httpx2.LocalProtocolError: connection,
    httpx2.RemoteProtocolError: connection,
    httpx2.TooManyRedirects: protocol,
    httpx2.DecodingError: protocol,
    httpx2.SSEError: protocol,
    httpx2.HTTPStatusError: protocol,
    httpx2.InvalidURL: not_applicable,
    httpx2.CookieConflict: not_applicable,
    httpx2.StreamError: not_applicable,
    httpx2.StreamConsumed: not_applicable,
    httpx2.StreamClosed: not_applicable,
    httpx2.ResponseNotRead: not_applicable,
    httpx2.RequestNotRead: not_applicable,
}


# -- OpenAI ---------------------------------------------------------------------------------------

# Error ``type`` values OpenAI-compatible vendors put in an error event inside a stream.
_OPENAI_TYPES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "tokens": 429,
    "requests": 429,
    "server_error": 500,
    "service_unavailable": 503,
    "overloaded_error": 503,
}


def _openai_status(exc: openai.APIStatusError, ctx: ErrorContext) -> PuenteError:
    return from_status(
        ctx,
        exc.status_code,
        exc.message if not isinstance(exc.body, dict) else exc.body.get("message", exc.message),
        code=exc.code,
        param=exc.param,
        wait=retry_after(exc.response.headers),
    )


def _openai_in_stream(exc: openai.APIError, ctx: ErrorContext) -> PuenteError:
    body = exc.body if isinstance(exc.body, dict) else {}
    code = body.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    else:
        status = _OPENAI_TYPES.get(str(exc.type or ""), 500)
    return from_status(ctx, status, exc.message, code=exc.code, param=exc.param)


OPENAI: dict[type[BaseException], Translate] = {
    openai.OpenAIError: not_applicable,
    openai.APIError: _openai_in_stream,
    openai.APIStatusError: _openai_status,
    openai.BadRequestError: _openai_status,
    openai.AuthenticationError: _openai_status,
    openai.OAuthError: _openai_status,
    openai.PermissionDeniedError: _openai_status,
    openai.NotFoundError: _openai_status,
    openai.ConflictError: _openai_status,
    openai.UnprocessableEntityError: _openai_status,
    openai.RateLimitError: _openai_status,
    openai.InternalServerError: _openai_status,
    openai.APIConnectionError: connection,
    openai.APITimeoutError: timeout,
    openai.APIResponseValidationError: protocol,
    openai.LengthFinishReasonError: not_applicable,
    openai.ContentFilterFinishReasonError: not_applicable,
    openai.InvalidWebhookSignatureError: not_applicable,
    openai.WebSocketConnectionClosedError: not_applicable,
    openai.WebSocketQueueFullError: not_applicable,
    openai._AmbiguousModuleClientUsageError: not_applicable,
}


# -- Anthropic ------------------------------------------------------------------------------------

# https://docs.anthropic.com/en/api/errors — also the only status an error event in a stream has.
ANTHROPIC_TYPES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _anthropic_status(exc: anthropic.APIStatusError, ctx: ErrorContext) -> PuenteError:
    status = exc.status_code
    if status < 400:  # an ``event: error`` inside a 200 stream
        status = ANTHROPIC_TYPES.get(str(exc.type or ""), 500)
    message = exc.api_message or exc.message
    # "temperature: Extra inputs are not permitted" names the field it is about.
    field = message.split(":", 1)[0] if status == 400 and ":" in message else ""
    param = field if field and " " not in field else None
    return from_status(
        ctx,
        status,
        message,
        param=param,
        code=exc.error_code,
        wait=retry_after(exc.response.headers),
    )


_ANTHROPIC_STATUS_CLASSES: tuple[type[anthropic.APIStatusError], ...] = (
    anthropic.APIStatusError,
    anthropic.BadRequestError,
    anthropic.AuthenticationError,
    anthropic.PaymentRequiredError,
    anthropic.PermissionDeniedError,
    anthropic.NotFoundError,
    anthropic.RequestTimeoutError,
    anthropic.ConflictError,
    anthropic.PreconditionFailedError,
    anthropic.ContentTooLargeError,
    anthropic.RequestTooLargeError,
    anthropic.UnprocessableEntityError,
    anthropic.RateLimitError,
    anthropic.RequestHeaderFieldsTooLargeError,
    anthropic.ClientClosedRequestError,
    anthropic.InternalServerError,
    anthropic.HTTPNotImplementedError,
    anthropic.ServiceUnavailableError,
    anthropic.GatewayTimeoutError,
    anthropic.DeadlineExceededError,
    anthropic.OverloadedError,
    # Subclasses the SDK picks by ``error.details.error_code``; the status decides for Puente.
    anthropic.CMEKContextUnavailableError,
    anthropic.OrganizationURLFetchDisabledError,
    anthropic.StorageNotReadyError,
    anthropic.CMEKKeyDisabledError,
    anthropic.CMEKKeyNetworkBlockedError,
    anthropic.CMEKKeyUnreachableError,
    anthropic.ClaudeCodeKeyCreatorNotMemberError,
    anthropic.ClaudeCodeVersionTooOldError,
    anthropic.ContractSpendLimitReachedError,
    anthropic.EnforcedSpendLimitReachedError,
    anthropic.LinkedOrganizationBillingUnavailableError,
    anthropic.LinkedOrganizationSpendLimitReachedError,
    anthropic.OrganizationOnHoldError,
    anthropic.OrganizationTypeNotSupportedError,
    anthropic.ParentOrganizationRequiredError,
    anthropic.RampLimitExceededError,
    anthropic.RequestBodyEncodingInvalidError,
    anthropic.RequestBodyEncodingUnsupportedError,
    anthropic.RequestBodyTooLargeAfterDecodingError,
    anthropic.SandboxEgressRestrictedError,
    anthropic.WorkspaceHumanReviewDisabledError,
)

ANTHROPIC: dict[type[BaseException], Translate] = {
    **dict.fromkeys(_ANTHROPIC_STATUS_CLASSES, _anthropic_status),
    anthropic.AnthropicError: not_applicable,
    anthropic.APIError: protocol,
    anthropic.APIConnectionError: connection,
    anthropic.APITimeoutError: timeout,
    anthropic.APIResponseValidationError: protocol,
    anthropic.APIWebhookValidationError: not_applicable,
    anthropic.RetryableError: not_applicable,
    anthropic.CredentialsError: not_applicable,
    anthropic.IdentityTokenFileError: not_applicable,
    anthropic.WorkloadIdentityError: not_applicable,
}


# -- Gemini ---------------------------------------------------------------------------------------

# google.rpc.Code names, for errors whose HTTP code is missing (inside a stream).
GEMINI_STATUSES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _gemini_details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    details = exc.details if isinstance(exc.details, dict) else {}
    inner = details.get("error", details)
    found = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _gemini_retry_delay(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return seconds(float(delay[:-1]))
            except ValueError:
                return None
    return None


def _gemini_api(exc: genai_errors.APIError, ctx: ErrorContext) -> PuenteError:
    status = exc.code if isinstance(exc.code, int) and exc.code >= 400 else 0
    status = status or GEMINI_STATUSES.get(str(exc.status or ""), 500)
    details = _gemini_details(exc)
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        status = 401  # Gemini answers a bad key with 400 INVALID_ARGUMENT
    headers = getattr(getattr(exc, "response", None), "headers", None)
    wait = _gemini_retry_delay(details)
    if wait is None and isinstance(headers, Mapping):
        wait = retry_after(headers)
    return from_status(ctx, status, exc.message, code=exc.status, wait=wait)


GEMINI: dict[type[BaseException], Translate] = {
    # The SDK validates answers against its types: one that does not fit is off-protocol.
    pydantic.ValidationError: protocol,
    genai_errors.APIError: _gemini_api,
    genai_errors.ClientError: _gemini_api,
    genai_errors.ServerError: _gemini_api,
    genai_errors.UnknownApiResponseError: protocol,
    genai_errors.ContinuationInterruptedError: not_applicable,
    genai_errors.ExperimentalWarning: not_applicable,
    genai_errors.FunctionInvocationError: not_applicable,
    genai_errors.UnknownFunctionCallArgumentError: not_applicable,
    genai_errors.UnsupportedFunctionError: not_applicable,
}


def translate(
    exc: BaseException, table: Mapping[type[BaseException], Translate], ctx: ErrorContext
) -> PuenteError:
    """The Puente error for ``exc``: its class's entry in ``table`` or ``HTTPX2``, else a base's."""
    for cls in type(exc).__mro__:
        handler = table.get(cls) or HTTPX2.get(cls)
        if handler is not None:
            return handler(exc, ctx)
    log.error("%s raised an unmapped %s for %s", ctx.vendor, type(exc).__name__, ctx.model)
    return UpstreamError(f"{ctx.vendor} failed for model '{ctx.model}'.")
