"""Server-sent events: the framing, and the response that relays an answer stream.

Every front door turns the pipeline's ``AnswerStream`` into frames of its own dialect; this
module sends them. It is the one place that:

- sends the 200 and the headers, then the frames as they come (those ready at the same moment
  in one write: ``server/api/coalesce.py``);
- closes the upstream when the stream ends or the client leaves, whichever comes first
  (``AnswerStream.aclose``, which also finishes the request);
- ends a stream that fails after it began with the front door's error event: a ``PuenteError``
  from the upstream, a drain cut-off at shutdown, or a bug (a 500, logged with its traceback).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.api.coalesce import relay
from server.errors import PuenteError
from server.lifecycle.http_guard import DISCONNECT, DisconnectHook
from server.pipeline.pipeline import AnswerStream

log = logging.getLogger("puente.http")

DONE = b"data: [DONE]\n\n"


def data_frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def event_frame(event: str, payload: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def openai_stream_error(error: PuenteError) -> bytes:
    """How an OpenAI-style stream ends when it failed after it began: an ``error`` event with
    the usual envelope, then ``[DONE]`` (so SDKs raise instead of waiting)."""
    return event_frame("error", orjson.dumps(error.to_dict())) + DONE


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


LEFT = "left mid-stream"
STALLED = "stopped reading"


class _Stop:
    """Why a stream was stopped, and the cancellation of the task sending it."""

    __slots__ = ("done", "task", "why")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.why: str | None = None
        self.done = False
        """The stream is sent (or failed): a late callback must not cancel what follows."""

    def stop(self, why: str) -> None:
        if self.why is None and not self.done:
            self.why = why
            self.task.cancel()

    def left(self) -> None:
        self.stop(LEFT)

    def on_watcher(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self.stop(LEFT)


class SSEResponse(Response):
    """Relays ``frames`` (made from ``stream``) as ``text/event-stream``."""

    request_id: bytes | None = None
    """``x-request-id`` for its head, when what sends it adds none (``fast_lane.Doors``)."""

    def __init__(
        self,
        stream: AnswerStream,
        frames: AsyncIterator[bytes],
        stream_error: Callable[[PuenteError], bytes],
        headers: Mapping[str, str],
        send_timeout: float,
    ) -> None:
        # Headers are sent by ``_send_all``; the base class is here so frameworks treat this
        # as a finished response and pass it on unchanged.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self.stream = stream
        self.frames = frames
        self.stream_error = stream_error
        self.extra_headers = headers
        self.send_timeout = send_timeout
        self._sending_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream in this task; stop it when the client leaves or stops reading.

        Both are told by callbacks that cancel this task: the HTTP protocol's disconnect hook
        (``server/lifecycle/http_guard.py``; a watcher task on ``receive`` under another ASGI
        server) and a timer that re-arms itself (``_check_stall``) — where a sender task, a
        watcher task, a watchdog task and ``asyncio.wait`` on the three cost a tenth of a
        stream's CPU (bench/DOOR.md)."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stop = _Stop(task)
        extensions = scope.get("extensions")
        hook: DisconnectHook | None = extensions.get(DISCONNECT) if extensions else None
        watcher: asyncio.Future[None] | None = None
        if hook is None:
            watcher = asyncio.ensure_future(wait_disconnect(receive))
            watcher.add_done_callback(stop.on_watcher)
        elif not hook.watch(stop.left):
            stop.why = LEFT  # gone before the first byte
        self._timer = loop.call_later(self.send_timeout / 4, self._check_stall, loop, stop)
        try:
            if stop.why is None:
                await self._send_all(send)
            stop.done = True  # from here on, nothing may cancel this task
        except asyncio.CancelledError:
            stop.done = True
            if stop.why is None:
                raise  # cancelled from elsewhere (uvicorn's shutdown): not ours
            task.uncancel()
        except OSError:
            stop.done = True
            self.stream.record.client_left()  # a write to a closed socket
        finally:
            stop.done = True
            if hook is not None:
                hook.unwatch(stop.left)
            if watcher is not None:
                watcher.cancel()
            if self._timer is not None:
                self._timer.cancel()
            if stop.why is not None:
                self.stream.record.client_left()
                log.info("client %s; upstream closed", stop.why)
            await self.stream.aclose()

    def _check_stall(self, loop: asyncio.AbstractEventLoop, stop: _Stop) -> None:
        """Stop the stream once one frame has waited ``send_timeout`` seconds for the client to
        take it (its socket buffers are full: it stopped reading). A watchdog every quarter of
        the timeout rather than a timeout around each send, which would cost a timer per
        frame."""
        since = self._sending_since
        if since is not None and loop.time() - since >= self.send_timeout:
            self._timer = None
            stop.stop(STALLED)
        elif not stop.done:
            self._timer = loop.call_later(self.send_timeout / 4, self._check_stall, loop, stop)

    async def _send_all(self, send: Send) -> None:
        stream = self.stream
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *_encoded(self.extra_headers),
        ]
        if self.request_id is not None:
            headers.append((b"x-request-id", self.request_id))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        ended = False
        try:
            clock = asyncio.get_running_loop().time

            async def write(body: bytes, more: bool = True) -> None:
                # Watched by ``_stalled``: a client that stops reading is as good as gone and
                # must not hold the upstream and the model's slot.
                self._sending_since = clock()
                await send({"type": "http.response.body", "body": body, "more_body": more})
                self._sending_since = None

            async def end(body: bytes) -> None:
                nonlocal ended
                await write(body, more=False)
                ended = True  # only once sent: a cut-off while waiting to send still ends it

            with stream.drain.track():
                # Frames ready together (one network read of the upstream) leave as one write,
                # the last ones with the end of the response.
                await relay(self.frames, write, end)
            return
        except PuenteError as error:
            # The 200 and some frames are out: the error goes in the stream. A drain cut-off
            # (``ServiceUnavailable`` from ``track``) ends the same way.
            stream.fail(error)
            log.warning("stream failed after it began: %s", error.message)
            await self._send_error(send, error)
        except OSError:
            raise  # the client is gone (its socket closed): see __call__
        except Exception:
            log.exception("stream broke after it began")
            internal = PuenteError("The server had an error processing your request.")
            stream.fail(internal)
            await self._send_error(send, internal)
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_error(self, send: Send, error: PuenteError) -> None:
        body = self.stream_error(error)
        await send({"type": "http.response.body", "body": body, "more_body": True})
