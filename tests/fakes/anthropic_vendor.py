"""A faithful fake of Anthropic's Messages API (``POST /v1/messages``) on 127.0.0.1.

Wire format as documented at https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming, and checked against the
``anthropic`` SDK's own types: every answer and every stream event is validated with
``anthropic.types`` before it is sent, so the fake cannot drift from what the SDK parses.

- Auth: ``x-api-key`` (or, as SDK 2.x sends it, ``Authorization: Bearer``) must hold the key;
  ``anthropic-version`` is required. Wrong key: 401 ``authentication_error``.
- Errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the documented
  statuses (400, 401, 403, 404, 413, 429 + ``retry-after``, 500, 529 ``overloaded_error``).
- Requests are checked the way the API checks them: unknown top-level fields ("Extra inputs are
  not permitted"; sampling parameters only under API version 2023-06-01; ``context_management``
  and mid-conversation ``system`` turns only with their betas), roles alternating and
  starting with user, non-empty text blocks, every ``tool_use`` answered by a ``tool_result`` in
  the next user turn.
- Streams: ``event:`` lines, ``message_start`` / ``content_block_start`` / ``ping`` /
  ``content_block_delta`` / ``content_block_stop`` / ``message_delta`` (cumulative usage) /
  ``message_stop``, and ``event: error`` when told to fail mid-stream.

Behaviour per upstream model (``program``): ``status`` (+ ``error_type``, ``retry_after``,
``echo_key``), ``hang`` (seconds before answering), ``error_after`` (stream events before an
``overloaded_error`` event), ``tool_calls`` (how many), ``reply`` (text), ``stop_reason``,
``thinking`` (a thinking block first), ``delay`` (seconds between stream events), ``mangle`` (a
function applied to the whole answer, or to each stream event, after it was checked against the
SDK's types: what a broken vendor or proxy could send; bytes it returns are sent as they are).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from aiohttp import web
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.fakes.vendor_server import VendorServer, sample_for, words

DEFAULT_VERSION = "2026-10-21"
LEGACY_VERSION = "2023-06-01"
TOP_LEVEL = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "output_config",
    "thinking",
    "service_tier",
    "container",
    "cache_control",
    "diagnostics",
    "inference_geo",
    "speed",
}
SAMPLING = {"temperature", "top_p", "top_k"}
# Betas that change what a request may hold (Claude Code sends both).
CONTEXT_MANAGEMENT = "context-management-2025-06-27"  # the top-level ``context_management``
# ``system`` turns in ``messages``: the beta's name in Claude Code 2.1.197, then in 2.1.332.
MID_CONVERSATION_SYSTEM = {
    "mid-conversation-system-2026-04-07",
    "mid-conversation-tool-changes-2026-07-01",
}
STATUS_OF = {
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
_EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
_ids = itertools.count(1)


def _mangled(plan: dict[str, Any], payload: dict[str, Any]) -> bytes:
    mangle = plan.get("mangle")
    sent = mangle(payload) if mangle is not None else payload
    return sent if isinstance(sent, bytes) else orjson.dumps(sent)


class Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


def error_response(kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(kind, message), status=STATUS_OF[kind], headers=headers)


def _prompt_words(body: dict[str, Any]) -> int:
    """The fake's token count: words, plus three per message."""
    words = sum(len(_text_of(m.get("content")).split()) + 3 for m in body.get("messages") or [])
    return words + len(_text_of(body.get("system")).split())


def _text_of(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, list):
        return " ".join(b.get("text", "") for b in block if isinstance(b, dict))
    return ""


class FakeAnthropic(VendorServer):
    name = "anthropic"

    def vendor_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    # -- checks the API makes ------------------------------------------------------------------

    def _authorised(self, headers: dict[str, str]) -> bool:
        given = headers.get("x-api-key")
        if given is None and headers.get("authorization", "").startswith("Bearer "):
            given = headers["authorization"][7:]
        return given == self.api_key

    def _validate(self, body: dict[str, Any], version: str, betas: set[str]) -> None:
        allowed = TOP_LEVEL | (SAMPLING if version == LEGACY_VERSION else set())
        if CONTEXT_MANAGEMENT in betas:
            allowed |= {"context_management"}
        for key in body:
            if key not in allowed:
                raise Invalid(f"{key}: Extra inputs are not permitted")
        for key in ("model", "messages", "max_tokens"):
            if key not in body:
                raise Invalid(f"{key}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise Invalid("max_tokens: Input should be greater than or equal to 1")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            raise Invalid("temperature: Input should be less than or equal to 1")
        messages = body["messages"]
        if not messages:
            raise Invalid("messages: at least one message is required")
        previous_tool_uses: list[str] = []
        turn = 0  # user and assistant turns alternate; system turns (a beta) stand aside
        for i, message in enumerate(messages):
            if message.get("role") == "system" and MID_CONVERSATION_SYSTEM & betas:
                if not _text_of(message.get("content")):
                    raise Invalid(f"messages.{i}: system content must be non-empty text")
                continue
            expected = "user" if turn % 2 == 0 else "assistant"
            turn += 1
            if message.get("role") != expected:
                raise Invalid(
                    f"messages: roles must alternate between 'user' and 'assistant', "
                    f"starting with 'user' (messages.{i})"
                )
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not blocks:
                raise Invalid(f"messages.{i}: content must not be empty")
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            missing = [t for t in previous_tool_uses if t not in results]
            if missing:
                raise Invalid(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}"
                )
            for j, block in enumerate(blocks):
                self._validate_block(block, f"messages.{i}.content.{j}", previous_tool_uses)
            previous_tool_uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        if previous_tool_uses:
            raise Invalid("messages: the last assistant message has tool_use without results")

    def _validate_block(self, block: dict[str, Any], where: str, tool_uses: list[str]) -> None:
        kind = block.get("type")
        if kind == "text":
            if not block.get("text"):
                raise Invalid(f"{where}: text content blocks must be non-empty")
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                if source.get("media_type") not in (
                    "image/jpeg",
                    "image/png",
                    "image/gif",
                    "image/webp",
                ):
                    raise Invalid(f"{where}.source.media_type: Input should be an image type")
                if not source.get("data"):
                    raise Invalid(f"{where}.source.data: Field required")
            elif source.get("type") == "url":
                if not str(source.get("url", "")).startswith(("http://", "https://")):
                    raise Invalid(f"{where}.source.url: Input should be a valid URL")
            else:
                raise Invalid(f"{where}.source: Input tag does not match any of the expected tags")
        elif kind == "tool_use":
            if not isinstance(block.get("input"), dict) or not block.get("id"):
                raise Invalid(f"{where}: tool_use needs an id and an input object")
        elif kind == "tool_result":
            if block.get("tool_use_id") not in tool_uses:
                raise Invalid(
                    f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        else:
            raise Invalid(f"{where}.type: Input tag '{kind}' does not match the expected tags")

    # -- answering -----------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response("invalid_request_error", "There was an error parsing the body.")
        await self.record(request, body)
        if not self._authorised(headers):
            return error_response("authentication_error", "invalid x-api-key")
        version = headers.get("anthropic-version")
        if not version:
            return error_response("invalid_request_error", "anthropic-version: header is required")
        plan = self.behaviour(str(body.get("model")))
        if plan.get("hang") and await self.idle(request, float(plan["hang"])):
            return web.Response(status=499)
        if plan.get("status"):
            return self._programmed_error(plan, headers)
        try:
            betas = {b.strip() for b in headers.get("anthropic-beta", "").split(",")}
            self._validate(body, version, betas)
        except Invalid as exc:
            return error_response("invalid_request_error", exc.message)
        message = self._answer(body, plan)
        if body.get("stream"):
            return await self._stream(request, message, plan)
        answer = _mangled(plan, message)
        return web.Response(
            body=answer,
            content_type="application/json",
            headers={"request-id": "req_fake"},
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``: the same body without ``max_tokens``."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = orjson.loads(await request.read())
        await self.record(request, body)
        if not self._authorised(headers):
            return error_response("authentication_error", "invalid x-api-key")
        for key in ("max_tokens", "stream", "stop_sequences", "temperature", "metadata"):
            if key in body:
                return error_response(
                    "invalid_request_error", f"{key}: Extra inputs are not permitted"
                )
        if not body.get("messages"):
            return error_response("invalid_request_error", "messages: Field required")
        return web.json_response({"input_tokens": _prompt_words(body)})

    def _programmed_error(self, plan: dict[str, Any], headers: dict[str, str]) -> web.Response:
        status = int(plan["status"])
        kind = plan.get("error_type") or next(
            (k for k, s in STATUS_OF.items() if s == status), "api_error"
        )
        message = plan.get("message") or {
            429: "Number of request tokens has exceeded your per-minute rate limit",
            529: "Overloaded",
            500: "Internal server error",
        }.get(status, f"A {kind}")
        if plan.get("echo_key"):
            # Some proxies quote the credential they refused; Puente must not pass it on.
            message += f" (key: {headers.get('x-api-key') or headers.get('authorization')})"
        extra = {"retry-after": str(plan["retry_after"])} if plan.get("retry_after") else None
        body = error_body(kind, message)
        return web.json_response(body, status=status, headers=extra)

    def _answer(self, body: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]
        last_blocks = last["content"] if isinstance(last["content"], list) else []
        results = [b for b in last_blocks if b.get("type") == "tool_result"]
        tools = body.get("tools") or []
        choice = (body.get("tool_choice") or {}).get("type", "auto")
        calls = int(plan.get("tool_calls", 1 if tools and choice != "none" else 0))
        prompt_words = _prompt_words(body)
        content: list[dict[str, Any]] = []
        stop_reason, stop_sequence = "end_turn", None
        if calls and not results and choice != "none":
            for i in range(calls):
                name = tools[i % len(tools)]["name"]
                if choice == "tool":
                    name = body["tool_choice"]["name"]
                content.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake{next(_ids)}",
                        "name": name,
                        "input": {"city": f"Lima{i}"},
                    }
                )
            stop_reason = "tool_use"
            output = 10 * calls
        else:
            fmt = (body.get("output_config") or {}).get("format")
            if fmt:
                text = orjson.dumps(sample_for(fmt["schema"])).decode()
            elif results:
                text = "The tools said: " + "; ".join(_text_of(r.get("content")) for r in results)
            else:
                text = plan.get("reply") or f"Hello! You said: {_text_of(last['content'])}"
            pieces = words(text)
            if len(pieces) > body["max_tokens"]:
                pieces, stop_reason = pieces[: body["max_tokens"]], "max_tokens"
            text = "".join(pieces)
            for stop in body.get("stop_sequences") or []:
                if stop in text:
                    text, stop_reason, stop_sequence = (
                        text[: text.index(stop)],
                        "stop_sequence",
                        stop,
                    )
            content.append({"type": "text", "text": text})
            output = len(words(text)) if text else 0
        thinking = 0
        if plan.get("thinking"):
            # Extended thinking comes first, with a signature; its tokens are part of the output.
            thought = {"type": "thinking", "thinking": "Let me think.", "signature": "sig-fake"}
            content.insert(0, thought)
            thinking = 3
            output += thinking
        message = {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": plan.get("stop_reason", stop_reason),
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": prompt_words,
                "output_tokens": output,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 2,
                "output_tokens_details": {"thinking_tokens": thinking},
            },
        }
        Message.model_validate(message)  # the SDK must be able to read what the fake says
        return message

    async def _stream(
        self, request: web.Request, message: dict[str, Any], plan: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "request-id": "req_fake"}
        )
        await response.prepare(request)
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
        for index, block in enumerate(message["content"]):
            if block["type"] == "thinking":
                start_block = {"type": "thinking", "thinking": "", "signature": ""}
                events += [
                    {"type": "content_block_start", "index": index, "content_block": start_block},
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                    },
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]},
                    },
                ]
            elif block["type"] == "text":
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                if index == 0:
                    events.append({"type": "ping"})
                events += [
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": w},
                    }
                    for w in words(block["text"])
                    if w
                ]
            else:
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                )
                args = orjson.dumps(block["input"]).decode()
                for piece in ("", args[: len(args) // 2], args[len(args) // 2 :]):
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        }
                    )
            events.append({"type": "content_block_stop", "index": index})
        events.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {
                    "output_tokens": usage["output_tokens"],
                    "input_tokens": usage["input_tokens"],
                    "output_tokens_details": usage["output_tokens_details"],
                },
            }
        )
        events.append({"type": "message_stop"})
        fail_after = plan.get("error_after")
        for n, event in enumerate(events):
            if fail_after is not None and n == int(fail_after):
                error = error_body("overloaded_error", "Overloaded")
                await response.write(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
                return response
            if event["type"] != "ping":
                _EVENTS.validate_python(event)
            frame = b"event: " + event["type"].encode() + b"\ndata: " + _mangled(plan, event)
            await response.write(frame + b"\n\n")
            if await self.idle(request, float(plan.get("delay", 0.001))):
                return response
        await response.write_eof()
        return response
