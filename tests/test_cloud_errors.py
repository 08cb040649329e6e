"""Vendor errors as the user sees them: every SDK exception class has a translation, and each kind
of failure of each vendor reaches the openai SDK with OpenAI's status and error type — before a
stream starts (a real HTTP status) and after (an SSE error event)."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google.genai import errors as genai_errors

from server.errors import PuenteError
from server.providers.vendor_errors import (
    ANTHROPIC,
    GEMINI,
    HTTPX2,
    OPENAI,
    ErrorContext,
    Translate,
    translate,
)
from tests.fakes.anthropic_vendor import FakeAnthropic
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

CTX = ErrorContext("Vendor", "m", ("sk-secret",))


def exported_exceptions(module: ModuleType) -> list[type[BaseException]]:
    found = {
        obj
        for name in dir(module)
        if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, BaseException)
    }
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize(
    ("module", "table"),
    [(openai, OPENAI), (anthropic, ANTHROPIC), (genai_errors, GEMINI), (httpx2, HTTPX2)],
    ids=["openai", "anthropic", "google-genai", "httpx2"],
)
def test_every_exception_an_sdk_exports_has_its_own_mapping(
    module: ModuleType, table: dict[type[BaseException], Translate]
) -> None:
    classes = exported_exceptions(module)
    assert len(classes) >= 8  # the walk found the SDK's errors
    missing = [cls.__name__ for cls in classes if cls not in table]
    assert missing == [], f"{module.__name__} exceptions without a translation: {missing}"


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    request = httpx2.Request("POST", "https://vendor.example/v1/x")
    return httpx2.Response(status, headers=headers, request=request)


def _expected(status: int) -> int:
    if status in (503, 529):
        return 503
    if status in (408, 504):
        return 504
    if status >= 500 or status in (401, 403):  # 401/403: Puente's own credentials refused
        return 502
    return status


ANTHROPIC_STATUS = [
    cls
    for cls in exported_exceptions(anthropic)
    if issubclass(cls, anthropic.APIStatusError)
    and isinstance(getattr(cls, "status_code", None), int)
]


@pytest.mark.parametrize("cls", ANTHROPIC_STATUS, ids=lambda cls: cls.__name__)
def test_each_anthropic_status_error_keeps_its_meaning(cls: type[anthropic.APIStatusError]) -> None:
    status = cls.status_code
    body = {"type": "error", "error": {"type": "x", "message": "said sk-secret"}}
    error = translate(cls("msg", response=_response(status), body=body), ANTHROPIC, CTX)
    assert isinstance(error, PuenteError)
    assert error.status_code == _expected(status)
    assert "sk-secret" not in error.message


def test_anthropic_error_event_inside_a_stream_is_read_by_its_type() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    exc = anthropic.APIStatusError("x", response=_response(200), body=body)
    error = translate(exc, ANTHROPIC, CTX)
    assert (error.status_code, error.error_type) == (503, "service_unavailable")


def test_rate_limits_pass_their_wait_on() -> None:
    limited = anthropic.RateLimitError(
        "x", response=_response(429, {"retry-after": "12"}), body=None
    )
    assert translate(limited, ANTHROPIC, CTX).headers == {"Retry-After": "12"}
    openai_limited = openai.RateLimitError(
        "x", response=_response(429, {"retry-after-ms": "2500"}), body=None
    )
    assert translate(openai_limited, OPENAI, CTX).headers == {"Retry-After": "2"}
    gemini_limited = genai_errors.ClientError(
        429,
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "quota",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
                ],
            }
        },
    )
    assert translate(gemini_limited, GEMINI, CTX).headers == {"Retry-After": "37"}


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (httpx2.ReadTimeout("slow"), 504, "timeout"),
        (httpx2.ConnectError("refused"), 502, "connection"),
        (httpx2.RemoteProtocolError("closed"), 502, "connection"),
        (genai_errors.ServerError(503, {"error": {"status": "UNAVAILABLE"}}), 503, "unavailable"),
        (genai_errors.ServerError(500, {"error": {"status": "INTERNAL"}}), 502, "upstream_status"),
        (genai_errors.APIError(0, {"error": {"status": "DEADLINE_EXCEEDED"}}), 504, "timeout"),
        (
            genai_errors.ClientError(
                400, {"error": {"code": 400, "details": [{"reason": "API_KEY_INVALID"}]}}
            ),
            502,
            "upstream",
        ),
    ],
)
def test_gemini_and_transport_errors(exc: BaseException, status: int, kind: str) -> None:
    error = translate(exc, GEMINI, CTX)
    assert (error.status_code, error.kind) == (status, kind)


# -- through Puente -------------------------------------------------------------------------------

# kind → (status, error type) the user sees.
KINDS = {
    # Puente's own credentials refused: its upstream's problem, not the client's key.
    "auth": (502, "upstream_error"),
    "permission": (502, "upstream_error"),
    "not_found": (404, "invalid_request_error"),
    "bad_request": (400, "invalid_request_error"),
    "rate_limit": (429, "rate_limit_error"),
    "overloaded": (503, "service_unavailable"),
    "server": (502, "upstream_error"),
    "timeout": (504, "timeout"),
    "unreachable": (502, "upstream_error"),
}
PROGRAMS: dict[str, dict[str, Any]] = {
    "permission": {"status": 403},
    "not_found": {"status": 404},
    "bad_request": {"status": 400},
    "rate_limit": {"status": 429, "retry_after": 7, "retry_delay": 7},
    "server": {"status": 500},
}


def provoke(
    vendor: str, kind: str, claude: FakeAnthropic, gemini: FakeGemini
) -> tuple[str, dict[str, Any]]:
    """The model to ask and the extra body that make ``vendor`` fail with ``kind``."""
    fixed = {"auth": "wrong-key", "timeout": "slow", "unreachable": "down"}
    if vendor == "gpt":
        if kind in ("timeout", "unreachable"):
            return f"gpt-{fixed[kind]}", {"fake": {"hang": 2}}
        status = {"auth": 401, "overloaded": 503}.get(kind) or PROGRAMS[kind]["status"]
        return "gpt-cloud", {"fake": {"status": status}}
    fake: FakeAnthropic | FakeGemini = claude if vendor == "claude" else gemini
    if kind in {"auth", "unreachable"}:
        return f"{vendor}-{fixed[kind]}", {}
    if kind == "timeout":
        fake.program("slow", hang=2)
        return f"{vendor}-slow", {}
    program = PROGRAMS.get(kind) or {"status": 529 if vendor == "claude" else 503}
    fake.program(f"err-{kind}", **program)
    return f"{vendor}/err-{kind}", {}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("vendor", ["claude", "gemini", "gpt"])
def test_each_error_kind_reaches_the_user_as_openai_would_say_it(
    cloud: openai.OpenAI,
    claude_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    fake: FakeOpenAI,
    vendor: str,
    kind: str,
    stream: bool,
) -> None:
    model, extra = provoke(vendor, kind, claude_fake, gemini_fake)
    with pytest.raises(openai.APIStatusError) as caught:
        cloud.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_body=extra or None,
        )
    status, error_type = KINDS[kind]
    error = caught.value
    assert error.status_code == status, error.message
    assert isinstance(error.body, dict)
    assert error.body["type"] == error_type
    assert set(error.body) == {"message", "type", "param", "code"}
    if kind == "rate_limit":
        assert error.response.headers["retry-after"] == "7"
    if kind in ("auth", "permission"):
        assert error.body["code"] == "upstream_auth_failed"
        assert "refused the credentials configured for model" in error.body["message"]


@pytest.mark.parametrize("vendor", ["claude", "gemini", "gpt"])
def test_an_error_after_the_stream_began_arrives_as_an_event(
    cloud: openai.OpenAI,
    claude_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    fake: FakeOpenAI,
    vendor: str,
) -> None:
    claude_fake.program("mid-fail", error_after=4)
    gemini_fake.program("mid-fail", error_after=3)
    model = {"claude": "claude/mid-fail", "gemini": "gemini/mid-fail", "gpt": "gpt-cloud"}[vendor]
    received = ""
    stream = cloud.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "tell me a long story"}],
        stream=True,
        extra_body={"fake": {"fail_after": 3}} if vendor == "gpt" else None,
    )
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += "".join(c.delta.content or "" for c in chunk.choices)
    assert received.startswith("Hello!")  # the answer had begun: 200 and chunks were out
    assert isinstance(caught.value.body, dict)
    expected = "upstream_error" if vendor == "gpt" else "service_unavailable"
    assert caught.value.body["type"] == expected
