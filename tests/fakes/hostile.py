"""A hostile OpenAI-compatible upstream: what a compromised or broken vendor, proxy or engine can
send back. The upstream model name picks the behaviour (``hostile/<behaviour>`` through a
wildcard model entry), so one fake serves a whole test module::

    quote-key       400 whose message quotes the request's Authorization and X-Upstream-Token
    sse-for-whole   an event stream in answer to a request that did not ask for one
    answer-quote    a whole answer whose content quotes the key
    auth            401 whose message quotes the key (as some proxies do)
    stream-quote    a stream whose error event quotes the key
    first-error     a stream whose first event is a 429 error
    chunk-quote     a stream chunk whose content quotes the key
    bomb            200 JSON, gzip-compressed: 300 KiB on the wire, 64 MiB decompressed
    endless         200 JSON that never ends
    long-error      400 whose message is 10,000 characters
    huge-error      500 whose JSON error message is 8 MiB
    huge-line       a stream with one 4 MiB line after a good chunk
    endless-line    a stream whose second line never ends
    garbage         a stream with ``data: {not json}`` after a good chunk
    bad-utf8        a stream with a chunk that is not UTF-8 after a good chunk
    bad-usage       a stream whose usage chunk has counts that are strings
    negative-usage  a whole answer with a negative usage count
    redirect        307 to the ``collector`` server (which records what it receives)
    retry-after     429 with a Retry-After that is not Latin-1

Every request's headers are recorded (``received``) so tests can prove the credentials were sent.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.threaded import ThreadedServer

UPSTREAM_KEY = "sk-upstream-SECRET-4242424242"
HEADER_SECRET = "tok-header-SECRET-777777"

BOMB_SIZE = 64 * 1024 * 1024


def _chunk(content: str, cid: str = "chatcmpl-hostile") -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "hostile",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def completion(content: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "hostile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage or {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def _bomb() -> bytes:
    """A valid chat completion whose content is ``BOMB_SIZE`` bytes, gzip-compressed."""
    head, tail = orjson.dumps(completion("@")).split(b"@")
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:  # streamed: little memory
        gz.write(head)
        block = b"a" * (1024 * 1024)
        for _ in range(BOMB_SIZE // len(block)):
            gz.write(block)
        gz.write(tail)
    return out.getvalue()


class Collector(ThreadedServer):
    """Where ``redirect`` points: records every request that reaches it."""

    name = "collector"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        async def record(request: web.Request) -> web.Response:
            await request.read()
            self.received.append({k.lower(): v for k, v in request.headers.items()})
            return web.json_response(completion("redirected"))

        app.router.add_route("*", "/{tail:.*}", record)


class HostileUpstream(ThreadedServer):
    name = "hostile"

    def __init__(self, collector: Collector | None = None) -> None:
        super().__init__()
        self.collector = collector
        self.received: list[dict[str, str]] = []
        self.bomb = _bomb()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.received.append({k.lower(): v for k, v in request.headers.items()})
        behaviour = str(body.get("model", ""))
        quoted = (
            f"invalid request (Authorization: {request.headers.get('Authorization')}, "
            f"X-Upstream-Token: {request.headers.get('X-Upstream-Token')})"
        )
        match behaviour:
            case "quote-key":
                return _error(400, quoted)
            case "sse-for-whole":
                if not body.get("stream"):
                    text = b"data: " + orjson.dumps(completion("hi")) + b"\n\ndata: [DONE]\n\n"
                    return web.Response(body=text, content_type="text/event-stream")
            case "answer-quote":
                return web.json_response(completion(quoted))
            case "auth":
                return _error(401, f"Incorrect API key provided: {UPSTREAM_KEY}")
            case "retry-after":
                response = _error(429, "slow down")
                # Bytes beyond Latin-1 (UTF-8 of "５秒"), as a broken proxy might send them.
                response.headers["Retry-After"] = "５秒"
                return response
            case "negative-usage":
                usage = {"prompt_tokens": -5000, "completion_tokens": 1, "total_tokens": -4999}
                return web.json_response(completion("hi", usage))
            case "bomb":
                return web.Response(
                    body=self.bomb,
                    headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                )
            case "endless":
                return await self._endless(request, b'{"id": "chatcmpl-x", "choices": [], "x": "')
            case "long-error":
                return _error(400, "y" * 10_000)
            case "huge-error":
                message = "x" * (8 * 1024 * 1024)
                return _error(500, message)
            case "redirect":
                assert self.collector is not None
                raise web.HTTPTemporaryRedirect(self.collector.url + "/v1/chat/completions")
        return await self._stream(request, behaviour, quoted)

    async def _endless(self, request: web.Request, head: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(head)
        block = b"a" * 65536
        try:
            while True:
                await response.write(block)
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _stream(
        self, request: web.Request, behaviour: str, quoted: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if behaviour == "first-error":
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                               "code": 429}}  # fmt: skip
            await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
            return response
        await response.write(_chunk("Hello"))
        match behaviour:
            case "stream-quote":
                error = {"error": {"message": quoted, "type": "server_error", "code": 500}}
                await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
                return response
            case "chunk-quote":
                await response.write(_chunk(f" {quoted}"))
            case "huge-line":
                await response.write(b"data: " + b"x" * (4 * 1024 * 1024) + b"\n\n")
            case "endless-line":
                await response.write(b"data: ")
                try:
                    while True:
                        await response.write(b"y" * 65536)
                        await asyncio.sleep(0)
                except (ConnectionError, RuntimeError):
                    return response
            case "garbage":
                await response.write(b"data: {not json}\n\n")
            case "bad-utf8":
                await response.write(b'data: {"id": "x", "choices": [], "c": "\xff\xfe"}\n\n')
            case "bad-usage":
                usage = {"prompt_tokens": "12", "completion_tokens": "x", "total_tokens": "12x"}
                body = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                        "model": "hostile", "choices": [], "usage": usage}  # fmt: skip
                await response.write(b"data: " + orjson.dumps(body) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": None}}  # fmt: skip
    return web.json_response(body, status=status)
