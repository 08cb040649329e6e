"""The fake OpenAI-compatible upstream, plus the faults real upstreams have, counted per attempt.

Everything ``FakeOpenAI`` does, and these ``fake`` directives on top::

    tag             count attempts under this name: ``attempts(tag)``, ``attempts(tag, model)``
    only_model      misbehave only when the upstream model is this one (a primary fails, its
                    fallback, sent the same body, answers)
    fail_first      misbehave only on the first N attempts of this tag (then answer normally)
    status          as before; with ``retry_after`` the ``Retry-After`` value (any status)
    context_length  400 ``context_length_exceeded``, as OpenAI words it
    reset           ``"before_headers"``: drop the connection before answering anything
    trickle         seconds between pieces of ``piece`` bytes (default 6) of a normal answer
    malformed_sse   after that many chunks, an event whose JSON is cut off

``faults`` given to the constructor apply to every request (a replica that is simply broken).
Every answer says ``Connection: close`` and closes its connection, so any connection still open is
one in use or leaked, and ``open_connections()`` can be asserted to reach zero.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import Closed, FakeOpenAI, _error

# Directives that make an answer fail; the rest (reply, delay, tool_calls) only shape it.
FAULTS = frozenset(
    {"status", "retry_after", "context_length", "reset", "hang", "trickle", "malformed",
     "malformed_sse", "fail_after", "reset_after", "no_done"}
)  # fmt: skip

CONTEXT_LENGTH_ERROR = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


class FaultyOpenAI(FakeOpenAI):
    def __init__(self, faults: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.faults = faults or {}
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._busy = 0  # not in ``state``: a reset must not lose answers still running

    def attempts(self, tag: str, model: str | None = None) -> int:
        """Requests this fake received with ``fake.tag == tag`` (for that upstream model)."""
        return sum(n for (t, m), n in self._attempts.items() if t == tag and model in (None, m))

    def reset(self) -> None:
        super().reset()
        self._attempts.clear()

    def busy(self) -> int:
        """Answers still being written (with ``open_connections()``: nothing left running)."""
        return self._busy

    # -- handlers ------------------------------------------------------------------------------

    def _configure(self, app: web.Application) -> None:
        async def close_after(request: web.Request, response: web.StreamResponse) -> None:
            # Runs after aiohttp chose the headers: say it, so no client pools the connection.
            response.headers["Connection"] = "close"
            response.force_close()

        app.on_response_prepare.append(close_after)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.state.received.append(body)
        self.state.headers.append({k.lower(): v for k, v in request.headers.items()})
        fake: dict[str, Any] = {**self.faults, **(body.get("fake") or {})}
        model = str(body.get("model"))
        attempt = 0
        if "tag" in fake:
            key = (str(fake["tag"]), model)
            self._attempts[key] += 1
            attempt = self._attempts[key]
        if not self._applies(fake, model, attempt):
            fake = {k: v for k, v in fake.items() if k not in FAULTS}
        self.counter += 1
        self._busy += 1
        try:
            response = await self._answer(request, body, fake, f"chatcmpl-fault{self.counter}")
        finally:
            self._busy -= 1
        return response

    @staticmethod
    def _applies(fake: dict[str, Any], model: str, attempt: int) -> bool:
        if "only_model" in fake and fake["only_model"] != model:
            return False
        return "fail_first" not in fake or attempt <= int(fake["fail_first"])

    async def _answer(
        self, request: web.Request, body: dict[str, Any], fake: dict[str, Any], cid: str
    ) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id", "")
        if fake.get("reset") == "before_headers":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if fake.get("hang") and await self._idle(request, float(fake["hang"]), rid):
            return web.Response(status=499)
        if fake.get("context_length"):
            return web.json_response(CONTEXT_LENGTH_ERROR, status=400)
        if fake.get("status"):
            response = _error(int(fake["status"]))
            if "retry_after" in fake:
                response.headers["Retry-After"] = str(fake["retry_after"])
            return response
        if fake.get("malformed"):
            return web.Response(text="<html>bad gateway</html>", content_type="application/json")
        if fake.get("trickle"):
            return await self._trickle(request, body, fake, cid, rid)
        if body.get("stream"):
            if "malformed_sse" in fake:
                return await self._malformed_stream(request, body, fake, cid)
            return await self._stream(request, body, fake, cid, rid)
        if fake.get("delay") and await self._idle(request, float(fake["delay"]), rid):
            return web.Response(status=499)
        return web.json_response(self._completion(body, fake, cid))

    # -- faulty answers ------------------------------------------------------------------------

    def _frames(self, body: dict[str, Any], fake: dict[str, Any], cid: str) -> list[bytes]:
        """A normal streamed text answer, as the SSE frames it is made of."""
        words, finish = self._plan(body, fake)
        base = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                "model": body["model"], "system_fingerprint": "fp_fake"}  # fmt: skip
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": w} for w in words]
        choices = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices.append({"index": 0, "delta": {}, "finish_reason": finish})
        frames = [orjson.dumps({**base, "choices": [c]}) for c in choices]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage(body, len(words))
            frames.append(orjson.dumps({**base, "choices": [], "usage": usage}))
        return [b"data: " + f + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]

    async def _trickle(
        self, request: web.Request, body: dict[str, Any], fake: dict[str, Any], cid: str, rid: str
    ) -> web.StreamResponse:
        if body.get("stream"):
            payload = b"".join(self._frames(body, fake, cid))
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        else:
            payload = orjson.dumps(self._completion(body, fake, cid))
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
        await response.prepare(request)
        pause, piece = float(fake["trickle"]), int(fake.get("piece", 6))
        try:
            for start in range(0, len(payload), piece):
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.state.closed.append(Closed(rid, time.monotonic()))
                    return response
                await response.write(payload[start : start + piece])
                await asyncio.sleep(pause)
            await response.write_eof()
        except ConnectionError:
            self.state.closed.append(Closed(rid, time.monotonic()))
        return response

    async def _malformed_stream(
        self, request: web.Request, body: dict[str, Any], fake: dict[str, Any], cid: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        good = self._frames(body, fake, cid)[: int(fake["malformed_sse"])]
        try:
            for frame in good:
                await response.write(frame)
            await response.write(b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta\n\n')
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the gateway closed the connection at the bad event, as it should
        return response
