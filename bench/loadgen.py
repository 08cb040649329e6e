"""A small, fast HTTP/1.1 load generator for the benchmarks (its own process, its own loop).

``--concurrency`` keep-alive connections, each with one request in flight at a time (like
``wrk``): a request is the same prebuilt bytes every time, the response is parsed by httptools
and the next request is written from the parser's callback, with no task or future per request.
Timed per request: time to the first body byte (time to first token, for a stream) and to the
end of the response; for a stream also the content frames (those carrying the mock's word) and
the gaps between one frame's arrival and the next. Only requests sent after ``--warmup`` and
finished before the deadline count.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions -c 32 --stream

Prints one JSON object: requests, errors, requests/s, frames/s and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]

MODEL = "bench-model"
# The word every content piece of the mock carries (bench/mock_upstream.py), in any wire format.
CONTENT = b"lorem"


def request_body(stream: bool, model: str = MODEL) -> bytes:
    """A typical small chat request: a system prompt, a question, a few sampling fields."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "What is the capital of Peru, and why is it there?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def http_request(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    return (
        f"POST {parts.path} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Content-Type: application/json\r\n"
        "Authorization: Bearer bench\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body


class Run:
    """The shared clock and results of one run."""

    def __init__(self, warmup_until: float, deadline: float, connections: int) -> None:
        self.warmup_until = warmup_until
        self.deadline = deadline
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.frames = 0
        self.content = 0
        self.gaps: list[float] = []
        self.completed = 0
        """Every answer that ended, warm-up and overtime included (what a server's CPU paid for)."""
        self.errors = 0
        self.first_error = ""
        self.open = connections
        self.done = asyncio.get_running_loop().create_future()

    def finished(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class Connection(asyncio.Protocol):
    def __init__(self, run: Run, payload: bytes) -> None:
        self.run = run
        self.payload = payload
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.first = 0.0
        self.last = 0.0
        self.tail = b""
        self.status = 0
        self.error_body = b""
        self.closed = False

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.sent and time.perf_counter() < self.run.deadline:
                self._error(f"connection lost: {exc!r}")
            self.run.finished()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error(f"bad response: {exc}")
            self._close()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.first = 0.0
        self.last = 0.0
        self.tail = b""
        self.error_body = b""
        self.transport.write(self.payload)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.run.finished()

    def _error(self, what: str) -> None:
        self.run.errors += 1
        if not self.run.first_error:
            self.run.first_error = what

    # -- httptools callbacks -----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        now = time.perf_counter()
        run = self.run
        counted = run.warmup_until <= now <= run.deadline
        if not self.first:
            self.first = now
            if counted and self.sent >= run.warmup_until:
                run.ttft.append(now - self.sent)
        if self.status != 200:
            self.error_body += body
            return
        # SSE events end with a blank line; one "\n\n" may be split across two reads.
        ended = body.count(b"\n\n")
        if self.tail == b"\n" and body[:1] == b"\n":
            ended += 1
        self.tail = body[-1:]
        if ended:
            # Frames, content and gaps count by when they arrive, so a stream that spans the
            # window's edge counts for what arrived inside it.
            if counted:
                if self.last:
                    run.gaps.append(now - self.last)
                run.frames += ended
                run.content += body.count(CONTENT)
            self.last = now

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        run = self.run
        if self.status != 200:
            self._error(f"HTTP {self.status}: {self.error_body[:200]!r}")
        else:
            run.completed += 1
        if self.status == 200 and self.sent >= run.warmup_until and now <= run.deadline:
            run.latency.append(now - self.sent)
        if now < run.deadline and self.transport is not None and not self.closed:
            self._send()
        else:
            self._close()


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


async def run_load(
    url: str, payload: bytes, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    start = time.perf_counter()
    run = Run(start + warmup, start + warmup + duration, concurrency)
    for _ in range(concurrency):
        await loop.create_connection(
            lambda: Connection(run, payload), parts.hostname or "127.0.0.1", parts.port or 80
        )
    try:
        await asyncio.wait_for(run.done, warmup + duration + 30)
    except TimeoutError:
        run.first_error = run.first_error or "responses still open 30 s after the deadline"
    window = duration
    count = len(run.latency)
    return {
        "url": url,
        "concurrency": concurrency,
        "duration_s": window,
        "requests": count,
        "completed": run.completed,
        "errors": run.errors,
        "first_error": run.first_error,
        "rps": count / window,
        "frames": run.frames,
        "frames_per_s": run.frames / window,
        "content_frames_per_s": run.content / window,
        "gap_ms": percentiles(run.gaps),
        "latency_ms": percentiles(run.latency),
        "ttft_ms": percentiles(run.ttft),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    payload = http_request(args.url, request_body(args.stream, args.model))
    coro = run_load(args.url, payload, args.concurrency, args.duration, args.warmup)
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
