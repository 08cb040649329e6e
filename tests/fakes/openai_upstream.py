"""A faithful fake of an OpenAI-compatible Chat Completions server, on 127.0.0.1.

It also answers ``/v1/embeddings`` (deterministic unit vectors, ``tests/fakes/vectors.py``; floats
or base64; ``fake.max_inputs`` refuses bigger batches, ``fake.no_dimensions`` refuses
``dimensions``) and legacy ``/v1/completions`` (``echo``, ``n``, ``logprobs``, ``stop``,
``max_tokens``, streams with ``include_usage``), each answer validated with the openai SDK's own
types before it is sent.

It answers like vLLM / OpenAI do (the same JSON objects, ``data: …`` SSE frames paced like a
generating model, ``data: [DONE]``, OpenAI's error envelope) and can be told to misbehave per
request through an extra body field, which also proves the gateway passes unknown fields on::

    client.chat.completions.create(..., extra_body={"fake": {"status": 503}})

Directives (all optional): ``status`` (answer that HTTP error), ``hang`` (seconds before the
headers), ``delay`` (seconds between chunks / before a whole answer), ``fail_after`` (send an
error event after that many chunks), ``reset_after`` (drop the TCP connection after that many
chunks), ``malformed`` (a body that is not JSON), ``no_done`` (end the stream without [DONE]),
``tool_calls`` (answer with that many tool calls), ``arguments`` (their arguments, an object),
``reply`` (the text to answer).

Clients that cannot add a body field (the Messages front door drops unknown fields) get the same
directives per upstream model name: ``fake.programs["tools-model"] = {"tool_calls": 1}``. A
programmed model stops calling tools once a tool's result comes back, as a model in a tool loop.

Clients that cannot add a body field (the Messages front door drops unknown fields) get the same
directives per upstream model name: ``fake.programs["tools-model"] = {"tool_calls": 1}``. A
programmed model stops calling tools once a tool's result comes back, as a model in a tool loop.

Everything received is recorded (``received``), and so is every connection the fake saw a client
close while it was still answering (``closed``), with the time it noticed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from openai.types import Completion, CreateEmbeddingResponse

from tests.fakes.threaded import ThreadedServer
from tests.fakes.vectors import tokens, vector


@dataclass
class Closed:
    request_id: str
    at: float


@dataclass
class FakeState:
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # names lower-cased
    closed: list[Closed] = field(default_factory=list)
    in_progress: int = 0


def _words(text: str) -> list[str]:
    """The text split into pieces that concatenate back to it, as a model streams it."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) + 3 for m in body.get("messages", []))


class FakeOpenAI(ThreadedServer):
    name = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.state = FakeState()
        self.counter = 0
        self.programs: dict[str, dict[str, Any]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._text_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._configure(app)

    def _configure(self, app: web.Application) -> None:
        """For subclasses (tests/fakes/faults.py): more routes, signals, middlewares."""

    def reset(self) -> None:
        self.state = FakeState()

    # -- handlers ------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _models(self, request: web.Request) -> web.Response:
        body = {
            "object": "list",
            "data": [
                {"id": "fake-model", "object": "model", "created": 1700000000, "owned_by": "fake"}
            ],
        }
        return web.json_response(body)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.state.received.append(body)
        self.state.headers.append({k.lower(): v for k, v in request.headers.items()})
        rid = request.headers.get("X-Request-Id", "")
        fake: dict[str, Any] = body.get("fake") or self._programmed(body)
        self.counter += 1
        completion_id = f"chatcmpl-fake{self.counter}"
        self.state.in_progress += 1
        try:
            if fake.get("hang"):
                if await self._idle(request, float(fake["hang"]), rid):
                    return web.Response(status=499)
            if fake.get("status"):
                return _error(int(fake["status"]))
            if fake.get("malformed"):
                return web.Response(
                    text="<html>upstream proxy error</html>", content_type="application/json"
                )
            if body.get("stream"):
                return await self._stream(request, body, fake, completion_id, rid)
            if fake.get("delay") and await self._idle(request, float(fake["delay"]), rid):
                return web.Response(status=499)
            return web.json_response(self._completion(body, fake, completion_id))
        finally:
            self.state.in_progress -= 1

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.state.received.append(body)
        self.state.headers.append({k.lower(): v for k, v in request.headers.items()})
        fake: dict[str, Any] = body.get("fake") or {}
        if fake.get("status"):
            return _error(int(fake["status"]))
        if body.get("dimensions") is not None and fake.get("no_dimensions"):
            return _error(400, "This model does not support 'dimensions'.")
        limit = fake.get("max_inputs")
        answer = embeddings_answer(body)
        if limit is not None and len(answer["data"]) > int(limit):
            return _error(400, f"'input' has more than {limit} items.")
        return web.json_response(answer)

    async def _text_completions(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.state.received.append(body)
        self.state.headers.append({k.lower(): v for k, v in request.headers.items()})
        fake: dict[str, Any] = body.get("fake") or {}
        self.counter += 1
        cid = f"cmpl-fake{self.counter}"
        if fake.get("status"):
            return _error(int(fake["status"]))
        choices, usage = text_choices(body, fake)
        if not body.get("stream"):
            answer = {
                "id": cid,
                "object": "text_completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": choices,
                "usage": usage,
            }
            Completion.model_validate(answer)
            return web.json_response(answer)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        base = {"id": cid, "object": "text_completion", "created": 1700000000}
        base["model"] = body["model"]
        for choice in choices:
            pieces = _words(choice["text"]) or [""]
            for n, piece in enumerate(pieces):
                last = n == len(pieces) - 1
                chunk = {
                    **base,
                    "choices": [
                        {
                            "index": choice["index"],
                            "text": piece,
                            "logprobs": None,
                            "finish_reason": choice["finish_reason"] if last else None,
                        }
                    ],
                }
                if last:  # the SDK's type wants a finish_reason, which only the last one has
                    Completion.model_validate(chunk)
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {**base, "choices": [], "usage": usage}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _programmed(self, body: dict[str, Any]) -> dict[str, Any]:
        program = dict(self.programs.get(body.get("model", ""), {}))
        messages = body.get("messages") or [{}]
        if messages[-1].get("role") == "tool":
            program.pop("tool_calls", None)
        return program

    async def _idle(self, request: web.Request, seconds: float, rid: str) -> bool:
        """Wait, watching the connection; True (and recorded) if the client closed it."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.state.closed.append(Closed(rid, time.monotonic()))
                return True
            await asyncio.sleep(0.01)
        return False

    # -- answers -------------------------------------------------------------------------------

    def _plan(self, body: dict[str, Any], fake: dict[str, Any]) -> tuple[list[str], str]:
        reply = fake.get("reply") or f"Hello! You said: {_last_user_text(body)}"
        words = _words(reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else stop or []
        text = "".join(words)
        for s in stops:
            if s in text:
                text = text[: text.index(s)]
                words, finish = _words(text) if text else [], "stop"
        return words, finish

    def _tool_calls(self, body: dict[str, Any], fake: dict[str, Any]) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        count = int(fake.get("tool_calls", 0))
        calls = []
        for i in range(count):
            name = tools[i % len(tools)]["function"]["name"] if tools else "f"
            # Derived from the request, so the same request gets the same ids (as tests compare).
            digest = hashlib.sha256(orjson.dumps(body.get("messages"))).hexdigest()[:12]
            arguments = fake.get("arguments", {"city": f"Lima{i}"})
            calls.append(
                {
                    "id": f"call_{digest}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                }
            )
        return calls

    def _usage(self, body: dict[str, Any], completion: int) -> dict[str, Any]:
        prompt = _prompt_tokens(body)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(self, body: dict[str, Any], fake: dict[str, Any], cid: str) -> dict[str, Any]:
        calls = self._tool_calls(body, fake)
        choices = []
        completion_tokens = 0
        for index in range(int(body.get("n") or 1)):
            if calls:
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": calls,
                }
                finish = "tool_calls"
                completion_tokens += 10 * len(calls)
            else:
                words, finish = self._plan(body, fake)
                message = {"role": "assistant", "content": "".join(words)}
                completion_tokens += len(words)
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            )
        return {
            "id": cid,
            "object": "chat.completion",
            "created": 1700000000,
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": self._usage(body, completion_tokens),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], fake: dict[str, Any], cid: str, rid: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        delay = float(fake.get("delay", 0.002))
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        frames: list[dict[str, Any]] = []
        calls = self._tool_calls(body, fake)
        if calls:
            frames.append(
                {"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}
            )
            for i, call in enumerate(calls):
                frames.append(
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                )
                args = call["function"]["arguments"]
                for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                    frames.append(
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [{"index": i, "function": {"arguments": piece}}]
                            },
                            "finish_reason": None,
                        }
                    )
            finish, completion_tokens = "tool_calls", 10 * len(calls)
        else:
            words, finish = self._plan(body, fake)
            frames.append(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            )
            frames += [{"index": 0, "delta": {"content": w}, "finish_reason": None} for w in words]
            completion_tokens = len(words)
        frames.append({"index": 0, "delta": {}, "finish_reason": finish})

        fail_after = fake.get("fail_after")
        reset_after = fake.get("reset_after")
        try:
            for n, choice in enumerate(frames):
                if fail_after is not None and n == int(fail_after):
                    error = {
                        "error": {
                            "message": "The engine ran out of KV cache.",
                            "type": "server_error",
                            "param": None,
                            "code": 500,
                        }
                    }
                    await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
                    await response.write(b"data: [DONE]\n\n")
                    return response
                if reset_after is not None and n == int(reset_after):
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                chunk = {**base, "choices": [choice]}
                if include_usage:
                    chunk["usage"] = None
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if delay and await self._idle(request, delay, rid):
                    return response
            if include_usage:
                usage = {**base, "choices": [], "usage": self._usage(body, completion_tokens)}
                await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            if not fake.get("no_done"):
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.state.closed.append(Closed(rid, time.monotonic()))
        return response


def embeddings_answer(body: dict[str, Any]) -> dict[str, Any]:
    """What vLLM / OpenAI answer: one ``embedding`` per input, in order, as floats or base64."""
    items = inputs_of(body.get("input"))
    data = [
        {"object": "embedding", "index": index, "embedding": vector(item, body.get("dimensions"))}
        for index, item in enumerate(items)
    ]
    prompt = sum(tokens(item) for item in items)
    answer = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    # The SDK's type holds the floats it decodes; base64 is the same floats, packed.
    CreateEmbeddingResponse.model_validate(answer)
    if body.get("encoding_format") == "base64":
        for item in data:
            values = item["embedding"]
            packed = struct.pack(f"<{len(values)}f", *values)
            item["embedding"] = base64.b64encode(packed).decode()
    return answer


def text_choices(
    body: dict[str, Any], fake: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Legacy completions: ``n`` choices per prompt, indexed prompt by prompt as OpenAI does;
    ``echo`` puts the prompt first, ``max_tokens`` and ``stop`` cut as a model would."""
    prompts = inputs_of(body.get("prompt"))
    n = int(body.get("n") or 1)
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for p, prompt in enumerate(prompts):
        prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        prompt_tokens += tokens(prompt)
        reply = fake.get("reply") or f" and then the story of {prompt_text} goes on."
        words, finish = [w for w in _words(reply) if w], "stop"
        limit = body.get("max_tokens")
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        text = "".join(words)
        stop = body.get("stop")
        for s in [stop] if isinstance(stop, str) else stop or []:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        completion_tokens += len(words) * n
        if body.get("echo"):
            text = prompt_text + text
        for i in range(n):
            logprobs = None
            if body.get("logprobs") is not None:
                pieces = _words(text)
                logprobs = {
                    "tokens": pieces,
                    "token_logprobs": [-0.5] * len(pieces),
                    "top_logprobs": [{w: -0.5} for w in pieces],
                    "text_offset": [sum(len(w) for w in pieces[:k]) for k in range(len(pieces))],
                }
            choices.append(
                {"index": p * n + i, "text": text, "logprobs": logprobs, "finish_reason": finish}
            )
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return choices, usage


def inputs_of(value: Any) -> list[Any]:
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return value
    return [value]


def _error(status: int, message: str | None = None) -> web.Response:
    kinds = {
        400: ("invalid_request_error", "Invalid 'messages': bad role.", "invalid_value"),
        401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
        404: ("invalid_request_error", "The model does not exist.", "model_not_found"),
        429: ("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
    }
    err_type, default, code = kinds.get(status, ("server_error", "The server had an error.", None))
    message = message or default
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    headers = {"Retry-After": "7"} if status == 429 else None
    return web.json_response(body, status=status, headers=headers)
