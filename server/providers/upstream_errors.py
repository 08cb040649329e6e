"""What every provider path judges the same way in an upstream's answer, without a vendor SDK:
waits it asks for, refusals of Puente's own credentials, and usage counts it claims."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

from server.errors import UpstreamError, UpstreamProtocolError

# A wait longer than this is not a hint anyone will honour; it also keeps ``inf`` out of headers.
MAX_RETRY_AFTER = 24 * 3600.0

USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
# An upstream's error message is passed on to the client and the log; this much is plenty.
MAX_MESSAGE = 2000


def brief(message: str) -> str:
    """An upstream's message, cut to a length worth relaying."""
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " [cut]"


def seconds(value: float) -> float | None:
    """A wait an upstream asked for, if it is a sane number of seconds."""
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None when
    absent or garbled (an upstream's header is never passed on as it came)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return seconds(float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return seconds(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return seconds(max(0.0, when.timestamp() - time.time()))


def retry_after_header(wait: float | None) -> dict[str, str]:
    """``Retry-After`` in whole seconds (never the upstream's own text) or nothing."""
    return {"Retry-After": str(max(1, round(wait)))} if wait is not None else {}


def auth_failed(who: str, model: str, status: int) -> UpstreamError:
    """The upstream refused the credentials *Puente* sent: the operator's problem, never the
    client's key, and never the upstream's words (they may quote the credential)."""
    return UpstreamError(
        f"{who} refused the credentials configured for model '{model}' (HTTP {status}); "
        "the gateway's operator must fix the model's api_key or headers.",
        code="upstream_auth_failed",
    )


def check_usage(usage: Any, model: str) -> None:
    """Usage an upstream reports must be counts, or the request could not be charged for."""
    if usage is None:
        return
    if not isinstance(usage, dict) or any(
        key in usage
        and usage[key] is not None
        and (type(usage[key]) is not int or usage[key] < 0)  # bool is an int subclass
        for key in USAGE_COUNTS
    ):
        raise UpstreamProtocolError(
            f"Model '{model}' reported usage that is not token counts; the answer was refused."
        )
