"""The pipeline's neutral request and stream chunk, in OpenAI's Chat Completions shapes.

Every front door turns its wire format into an ``UpstreamRequest``: a ``ChatRequest`` for chat
(Chat Completions itself, Responses, Messages), a plain ``UpstreamRequest`` for embeddings and
legacy completions. The body is parsed once into a plain dict and validated against a schema that
checks only the fields Puente relies on; every other field is kept untouched and passed on,
because clients send vendor extras (``top_k``, ``guided_json``, ``chat_template_kwargs`` …).

A request is never changed in place once parsed: personas and each attempt on a model (retries,
fallbacks) work on their own copy (``with_body``, ``for_attempt``), so what one model needed
(``system_role: fold``, its upstream name) does not leak into the next one's request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Self, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from server.errors import InvalidRequest, MalformedJSON, param_path

JSON = dict[str, Any]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Schema(BaseModel):
    # Unknown fields are accepted (and forwarded); only the known ones are checked.
    model_config = ConfigDict(extra="allow", strict=False)


class _Message(_Schema):
    role: Role
    content: StrictStr | list[JSON] | None = None
    name: StrictStr | None = None
    tool_calls: list[JSON] | None = None
    tool_call_id: StrictStr | None = None


class _StreamOptions(_Schema):
    include_usage: StrictBool | None = None


class _ChatRequestSchema(_Schema):
    model: Annotated[StrictStr, Field(min_length=1)]
    messages: Annotated[list[_Message], Field(min_length=1)]
    stream: StrictBool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    tools: list[JSON] | None = None
    tool_choice: StrictStr | JSON | None = None
    response_format: JSON | None = None


# -- the plain case without pydantic ----------------------------------------------------------
#
# ``_ChatRequestSchema.model_validate`` builds a model object per message: about 2.5 us for one
# message, 29 us for forty, against 0.6 and 10 us for the checks below. Most bodies are plain:
# ``plainly_valid`` says yes only to a body the schema certainly accepts (by the same rules,
# narrower: exact types, no coercion), so a yes skips the schema and anything else, every invalid
# body included, still goes through it and gets the error it always got.
# tests/test_request_validation.py checks the "certainly" against the schema on generated bodies.

_ROLES = frozenset(get_args(Role))


def _is_object(value: object) -> bool:
    return type(value) is dict and all(type(k) is str for k in value)


def _is_objects(value: object) -> bool:
    return type(value) is list and all(_is_object(item) for item in value)


def _is_str_or_none(value: object) -> bool:
    return value is None or type(value) is str


def _is_bool_or_none(value: object) -> bool:
    return value is None or type(value) is bool


def _is_int_at_least_1(value: object, most: int | None = None) -> bool:
    return value is None or (type(value) is int and value >= 1 and (most is None or value <= most))


def _is_number_within(value: object, most: float) -> bool:
    return value is None or (type(value) in (int, float) and 0 <= value <= most)  # type: ignore[operator]


def _is_str_list_or_str_or_none(value: object) -> bool:
    return (
        value is None
        or type(value) is str
        or (type(value) is list and all(type(item) is str for item in value))
    )


def _is_object_or_none(value: object) -> bool:
    return value is None or _is_object(value)


def _is_objects_or_none(value: object) -> bool:
    return value is None or _is_objects(value)


def _is_role(value: object) -> bool:
    return type(value) is str and value in _ROLES


def _is_content(value: object) -> bool:
    return value is None or type(value) is str or _is_objects(value)


def _is_stream_options(value: object) -> bool:
    return value is None or (
        _is_object(value) and _is_bool_or_none(value.get("include_usage"))  # type: ignore[attr-defined]
    )


# Each known field's check; a field not named here may hold anything (it is passed on).
_MESSAGE_FIELDS: dict[str, Callable[[object], bool]] = {
    "role": _is_role,
    "content": _is_content,
    "name": _is_str_or_none,
    "tool_calls": _is_objects_or_none,
    "tool_call_id": _is_str_or_none,
}


def _is_messages(value: object) -> bool:
    if type(value) is not list or not value:
        return False
    checks = _MESSAGE_FIELDS
    for message in value:
        if type(message) is not dict or "role" not in message:
            return False
        for field, item in message.items():
            check = checks.get(field)
            if check is not None and not check(item):
                return False
    return True


_BODY_FIELDS: dict[str, Callable[[object], bool]] = {
    "model": lambda value: type(value) is str and value != "",
    "messages": _is_messages,
    "stream": _is_bool_or_none,
    "stream_options": _is_stream_options,
    "max_tokens": _is_int_at_least_1,
    "max_completion_tokens": _is_int_at_least_1,
    "n": lambda value: _is_int_at_least_1(value, 128),
    "temperature": lambda value: _is_number_within(value, 2),
    "top_p": lambda value: _is_number_within(value, 1),
    "stop": _is_str_list_or_str_or_none,
    "tools": _is_objects_or_none,
    "tool_choice": lambda value: _is_str_or_none(value) or _is_object(value),
    "response_format": _is_object_or_none,
}


def plainly_valid(body: JSON) -> bool:
    """True only for a body ``_ChatRequestSchema`` accepts (see above); False says nothing."""
    if "model" not in body or "messages" not in body:
        return False
    checks = _BODY_FIELDS
    for field, value in body.items():
        check = checks.get(field)
        if check is not None and not check(value):
            return False
    return True


# Tags pydantic puts in an error's location for the branch of a union that failed.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "literal"})


def _is_union_tag(part: str) -> bool:
    return part in _UNION_TAGS or "[" in part or "-" in part


def first_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p)))
    param = param_path(loc) or None
    if err["type"] == "missing":
        return InvalidRequest(
            f"'{param}' is a required property", param=param, code="missing_required_parameter"
        )
    return InvalidRequest(
        f"Invalid value for '{param}': {err['msg']}.", param=param, code="invalid_value"
    )


Operation = Literal["chat", "completions", "embeddings"]
"""Which provider ability serves a request."""


def load_object(raw: bytes) -> JSON:
    """A request body that must be one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise MalformedJSON("The request body must be a JSON object.")
    return body


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """A validated request for one operation.

    ``body`` is the OpenAI-shaped JSON object the upstream receives (with ``model`` swapped);
    ``model`` is the public name the client asked for (a model or a persona); ``upstream_model``
    is the name the chosen upstream knows, set for each attempt.
    """

    body: JSON
    model: str
    upstream_model: str
    operation: Operation = "chat"
    stream: bool = False
    include_usage: bool = False

    def upstream_body(self) -> JSON:
        """The body an OpenAI-compatible upstream receives."""
        if self.upstream_model == self.body.get("model"):
            return self.body
        return {**self.body, "model": self.upstream_model}

    def with_body(self, body: JSON) -> Self:
        return replace(self, body=body)

    def for_attempt(self, upstream_model: str) -> Self:
        """This request as sent to one model: its own copy, to be shaped for that model."""
        cls = type(self)
        if cls is ChatRequest or cls is UpstreamRequest:
            # The constructor: half what ``dataclasses.replace`` costs, on every request.
            return cls(
                dict(self.body),
                self.model,
                upstream_model,
                self.operation,
                self.stream,
                self.include_usage,
            )
        # A subclass may carry more (``NativeMessages``: the client's own Messages body).
        return replace(self, body=dict(self.body), upstream_model=upstream_model)


@dataclass(frozen=True, slots=True)
class ChatRequest(UpstreamRequest):
    """A validated chat completion request."""

    @classmethod
    def parse(cls, raw: bytes) -> ChatRequest:
        return cls.from_body(load_object(raw))

    @classmethod
    def from_body(cls, body: JSON) -> ChatRequest:
        """Validate a Chat Completions body (a client's, or one a front door translated)."""
        if not plainly_valid(body):
            try:
                _ChatRequestSchema.model_validate(body)
            except ValidationError as exc:
                raise first_error(exc) from None
        options = body.get("stream_options") or {}
        return cls(
            body=body,
            model=body["model"],
            upstream_model=body["model"],
            stream=bool(body.get("stream")),
            include_usage=bool(options.get("include_usage")),
        )

    @property
    def messages(self) -> list[JSON]:
        messages: list[JSON] = self.body["messages"]
        return messages


class StreamChunk:
    """One ``chat.completion.chunk``, relayed as the upstream's bytes unless someone reads it.

    Reading ``data`` parses the chunk (once); from then on ``encode`` serialises the possibly
    changed object. A chunk nobody looks at goes out byte for byte as it came in.
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, raw: bytes | None = None, data: JSON | None = None) -> None:
        self._raw = raw
        self._data = data

    @property
    def data(self) -> JSON:
        if self._data is None:
            assert self._raw is not None
            parsed: JSON = orjson.loads(self._raw)
            self._data = parsed
            self._raw = None
            return parsed
        self._raw = None
        return self._data

    def encode(self) -> bytes:
        if self._raw is not None:
            return self._raw
        return orjson.dumps(self._data)

    @property
    def is_usage_only(self) -> bool:
        """True for the final ``choices: []`` chunk that carries only usage."""
        raw = self._raw
        if raw is not None and b'"usage"' not in raw:
            return False
        data = self._data
        if data is None:
            assert raw is not None
            data = self._data = orjson.loads(raw)
        # Only looked at: the bytes still say what the object says, and go out as they came
        # (an upstream that sends ``"usage": null`` on every chunk, as OpenAI's API does, would
        # otherwise have each chunk written anew).
        return not data.get("choices") and bool(data.get("usage"))

    def __repr__(self) -> str:
        return f"StreamChunk({self.encode()[:80]!r})"


def completion_tokens(usage: JSON | None) -> int:
    if not usage:
        return 0
    value = usage.get("completion_tokens") or 0
    return int(value)
