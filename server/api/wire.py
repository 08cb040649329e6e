"""Responses in OpenAI's shapes: JSON bodies, error envelopes and SSE streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.errors import PuenteError, ServiceUnavailable
from server.pipeline.pipeline import SSE_DONE, ChatStream

log = logging.getLogger("puente.http")

T = TypeVar("T")

# What a client that went away is counted as (nginx's convention).
CLIENT_CLOSED = 499


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def model_header(name: str) -> str:
    """``x-puente-model``: which model answered. Wildcard names come from the client, so anything
    outside printable ASCII is percent-encoded rather than trusted into a header."""
    return quote(name, safe="/:._-+@*")


def error_response(error: PuenteError) -> Response:
    return Response(
        error.to_json(),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


class ClientDisconnected(Exception):
    """The client closed its connection before the answer was ready."""


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it as soon as the client disconnects (which, for an upstream
    call, closes the upstream connection and lets the engine free its KV cache)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    return task.result()


def _encoded(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    if not headers:
        return []
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SSEResponse(Response):
    """Relays a ``ChatStream`` as ``text/event-stream``; closes the upstream when the stream ends
    or the client leaves, whichever comes first, then calls ``on_close``."""

    def __init__(
        self,
        stream: ChatStream,
        on_close: Callable[[], None],
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        # Headers are sent by ``_send_all``; the base class is here so frameworks treat this
        # as a finished response and pass it on unchanged.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self.stream = stream
        self.on_close = on_close
        # e.g. x-ratelimit-*, computed when the request was admitted
        self.extra_headers = extra_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.ensure_future(self._send_all(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((sender, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                sender.cancel()
                self.stream.record.status = CLIENT_CLOSED
                log.info("client left mid-stream; upstream closed")
            await asyncio.gather(sender, return_exceptions=True)
            failure = None if sender.cancelled() else sender.exception()
            if isinstance(failure, OSError):
                self.stream.record.status = CLIENT_CLOSED  # a write to a closed socket
            elif failure is not None:
                raise failure
        finally:
            watcher.cancel()
            try:
                await self.stream.aclose()
            finally:
                self.on_close()

    async def _send_all(self, send: Send) -> None:
        stream = self.stream
        answered = stream.record.answered_by or stream.model
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-puente-model", model_header(answered).encode()),
                    *_encoded(self.extra_headers),
                ],
            }
        )
        try:
            with stream.drain.track() if stream.drain else nullcontext():
                async for frame in stream.frames():
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
        except ServiceUnavailable as error:
            # Shutdown's drain timeout cut the stream off: end it the way a failed stream ends.
            stream.record.fail(error)
            event = b"event: error\ndata: " + error.to_json() + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": SSE_DONE, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
