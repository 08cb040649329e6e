"""A fast mock upstream in three vendors' wire formats, for benchmarks only (the faithful fakes
are in tests/fakes/).

It answers ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic Messages) and
``POST /v1beta/models/M:generateContent`` / ``:streamGenerateContent?alt=sse`` (Gemini) with the
same prebuilt bytes every time, so what a benchmark measures is the gateway (or the HTTP client)
in front of it, not the mock. Raw asyncio protocol,
httptools parser, uvloop where installed; one process, meant to run apart from the load
generator and the gateway so it does not share their event loop.

- non-streaming: a fixed ``chat.completion`` JSON;
- ``"stream": true`` in the body: ``--chunks`` content chunks, a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is asked for, then ``data: [DONE]``, chunked like uvicorn does.
  ``--interval-ms 0`` writes the whole stream at once; above 0 the first chunk goes out at once
  and each next one after that many milliseconds (a model's pacing);
- Anthropic: a whole ``message``, or ``message_start``, ``content_block_start``, ``ping``,
  ``--chunks`` ``content_block_delta`` events, ``content_block_stop``, ``message_delta`` and
  ``message_stop``, each an ``event:`` + ``data:`` pair;
- Gemini: a whole ``GenerateContentResponse``, or ``--chunks`` of them as ``data:`` events (the
  last with ``finishReason`` and the usage), separated by ``\r\n\r\n`` as Google sends them;
- the same pacing for all three: one content piece per ``--interval-ms``, and what ends a stream
  (finish, usage, ``[DONE]``; ``message_stop``; the last piece's usage) one interval after the last
  piece, in one write;
- ``GET /v1/models`` and ``GET /health`` for readiness probes.

    python bench/mock_upstream.py --port 9100 --chunks 32 --interval-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any, cast

import httptools
import orjson

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]

MODEL = "bench-model"
CREATED = 1_700_000_000
WORD = "lorem "


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def _completion(tokens: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": WORD * tokens, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 24,
                "completion_tokens": tokens,
                "total_tokens": 24 + tokens,
            },
            "system_fingerprint": None,
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (``Transfer-Encoding: chunked``)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _frame(event: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    return _chunked(b"data: " + event + b"\n\n")


def stream_frames(chunks: int, usage: bool) -> list[bytes]:
    """The role chunk, the content chunks, then what ends the stream as one piece: the finish
    chunk, the usage chunk, ``[DONE]`` and the body's end carry no generated token, and vLLM and
    OpenAI send them together (as the Anthropic and Gemini streams below end)."""
    frames = [_frame(orjson.dumps(_chunk({"role": "assistant", "content": ""})))]
    frames += [_frame(orjson.dumps(_chunk({"content": WORD}))) for _ in range(chunks)]
    end = _frame(orjson.dumps(_chunk({}, "stop")))
    if usage:
        counts = {"prompt_tokens": 24, "completion_tokens": chunks, "total_tokens": 24 + chunks}
        event = {**_chunk({}), "choices": [], "usage": counts}
        end += _frame(orjson.dumps(event))
    frames.append(end + _frame(b"[DONE]") + b"0\r\n\r\n")
    return frames


# -- Anthropic Messages ----------------------------------------------------------------------


def _message(tokens: int) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": WORD * tokens}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 24, "output_tokens": tokens},
        }
    )


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return _chunked(b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n")


def message_frames(chunks: int) -> list[bytes]:
    start = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 24, "output_tokens": 1},
    }
    delta = {"type": "content_block_delta", "index": 0}
    delta["delta"] = {"type": "text_delta", "text": WORD}
    frames = [
        _event(b"message_start", {"type": "message_start", "message": start})
        + _event(
            b"content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _event(b"ping", {"type": "ping"})
    ]
    frames += [_event(b"content_block_delta", delta) for _ in range(chunks)]
    frames.append(
        _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
        + _event(b"message_stop", {"type": "message_stop"})
        + b"0\r\n\r\n"
    )
    return frames


# -- Gemini generateContent ------------------------------------------------------------------


def _candidate(text: str, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _gemini(text: str, finish: str | None, output: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": 24}
    if output is not None:
        usage.update(candidatesTokenCount=output, totalTokenCount=24 + output)
    return {
        "candidates": [_candidate(text, finish)],
        "usageMetadata": usage,
        "modelVersion": MODEL,
        "responseId": "resp-bench",
    }


def gemini_frames(chunks: int) -> list[bytes]:
    def frame(data: dict[str, Any]) -> bytes:
        return _chunked(b"data: " + orjson.dumps(data) + b"\r\n\r\n")

    frames = [frame(_gemini(WORD, None, None)) for _ in range(chunks - 1)]
    frames.append(frame(_gemini(WORD, "STOP", chunks)) + b"0\r\n\r\n")
    return frames


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
MODELS = _response(
    b"200 OK",
    orjson.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED}]}
    ),
)
HEALTH = _response(b"200 OK", b"{}")
NOT_FOUND = _response(b"404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')


class Answers:
    """Every byte the mock will ever send, built once at start."""

    def __init__(self, tokens: int, chunks: int, interval: float) -> None:
        self.completion = _response(b"200 OK", _completion(tokens))
        self.interval = interval
        self.frames = {usage: stream_frames(chunks, usage) for usage in (False, True)}
        self.message = _response(b"200 OK", _message(tokens))
        self.message_frames = message_frames(chunks)
        self.gemini = _response(b"200 OK", orjson.dumps(_gemini(WORD * tokens, "STOP", tokens)))
        self.gemini_frames = gemini_frames(chunks)
        streams = [*self.frames.values(), self.message_frames, self.gemini_frames]
        # Unpaced, a stream is written at once: those bytes are prebuilt too.
        self.whole = {id(frames): STREAM_HEAD + b"".join(frames) for frames in streams}


def _asks(body: bytes, field: bytes) -> bool:
    """``"field": true`` in a JSON body, spaced or not (no parsing: the mock stays fast)."""
    return b'"%s":true' % field in body or b'"%s": true' % field in body


class MockProtocol(asyncio.Protocol):
    __slots__ = ("answers", "body", "loop", "parser", "transport", "url")

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None:
            return
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        answers = self.answers
        if method == b"POST" and path == b"/v1/chat/completions":
            body = b"".join(self.body)
            if _asks(body, b"stream"):
                self._stream(transport, answers.frames[_asks(body, b"include_usage")])
            else:
                transport.write(answers.completion)
        elif method == b"POST" and path == b"/v1/messages":
            if _asks(b"".join(self.body), b"stream"):
                self._stream(transport, answers.message_frames)
            else:
                transport.write(answers.message)
        elif method == b"POST" and path.endswith(b":streamGenerateContent"):
            self._stream(transport, answers.gemini_frames)
        elif method == b"POST" and path.endswith(b":generateContent"):
            transport.write(answers.gemini)
        elif path == b"/v1/models":
            transport.write(MODELS)
        elif path == b"/health":
            transport.write(HEALTH)
        else:
            transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive():
            transport.close()

    def _stream(self, transport: asyncio.Transport, frames: list[bytes]) -> None:
        answers = self.answers
        if answers.interval <= 0:
            transport.write(answers.whole[id(frames)])
            return
        transport.write(STREAM_HEAD + frames[0])
        # call_later chains instead of a task per stream: cheaper, and the mock stays fast.
        self.loop.call_later(answers.interval, self._next_frame, transport, frames, 1)

    def _next_frame(self, transport: asyncio.Transport, frames: list[bytes], i: int) -> None:
        if transport.is_closing():
            return
        transport.write(frames[i])
        if i + 1 < len(frames):
            self.loop.call_later(self.answers.interval, self._next_frame, transport, frames, i + 1)


async def serve(host: str, port: int, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(answers), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"mock upstream on http://{host}:{bound}/v1", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=16, help="words in a whole completion")
    parser.add_argument("--chunks", type=int, default=32, help="content chunks per stream")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="pacing between chunks")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    answers = Answers(args.tokens, args.chunks, args.interval_ms / 1000)
    if uvloop is not None:
        uvloop.run(serve(args.host, args.port, answers))
    else:
        asyncio.run(serve(args.host, args.port, answers))


if __name__ == "__main__":
    main()
