"""Limits at the HTTP layer, before a request reaches the app (``server.http`` in the config).

uvicorn bounds little by itself: with httptools (what ``puente serve`` uses) a request's headers
may grow without end, a connection may send them one byte a minute, and a connection that never
sends anything is never closed (its keep-alive timer starts only after a first answer). An
unauthenticated client could hold memory and sockets that way. This protocol adds what is missing:

- the request line and headers together are at most ``max_header_bytes`` (431 past it, counted as
  they arrive, so the parser never holds more than that plus one read);
- at most ``max_headers`` header fields (431);
- headers must be complete ``header_timeout`` seconds after a connection opens or a new request
  starts (408 and the connection closed), which also closes connections that never send;
- at most ``max_connections`` open connections and requests: past it, the ``busy`` app answers
  (the caller's error envelope, ``server.api.envelopes.over_capacity``) where uvicorn's own
  ``limit_concurrency`` would answer plain text that no SDK can read;
- uvicorn's own ``timeout_keep_alive`` (idle between requests) is set from the same settings by
  ``uvicorn_options``.

Two things for speed, under ``puente serve`` only (another ASGI server gets the same answers the
slower way):

- a POST to a front door's path is handed straight to the app's ``doors``
  (``server/api/fast_lane.py``), past uvicorn's proxy-headers middleware (Puente reads neither the
  client's address nor the scheme) and the app's own dispatch;
- such a POST's answer, when it is one block of JSON, goes out through
  ``scope["extensions"]["puente.answer"]`` (``Answer``): status line, headers and body built as one
  piece of bytes and written at once, the request cycle completed as its ``send`` would complete
  it for the two ASGI messages (bench/DOOR.md);
- ``scope["extensions"]["puente.disconnect"]`` lets a request be told when its client leaves
  (``DisconnectHook``) by a callback from the protocol, where a task per request awaiting
  ``receive()`` would do the same (``server/api/front_door.py``, ``until_disconnect``).

Without httptools (h11), uvicorn's ``h11_max_incomplete_event_size`` bounds the header bytes and
its ``limit_concurrency`` the connections (503 in plain text); the header count and timeout and
the enveloped 503 are httptools-only.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any, Protocol, cast

from starlette.types import ASGIApp, Receive, Scope, Send

from server.config import HttpLimits
from server.lifecycle.one_write import OneWriteTransport

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


DISCONNECT = "puente.disconnect"
"""The key of the ``DisconnectHook`` in a request's ``scope["extensions"]``."""


class DisconnectHook(Protocol):
    def watch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` once if the client leaves (until ``unwatch``); False, and no call,
        when it has already left."""
        ...

    def unwatch(self, callback: Callable[[], None]) -> None: ...


ANSWER = "puente.answer"
"""The key of a door's POST's ``Answer`` in ``scope["extensions"]``."""


class Answer(Protocol):
    def __call__(self, status: int, lines: bytes, body: bytes | memoryview) -> bool:
        """Send the whole answer: ``status``, the server's own headers (``date``, ``server``),
        the header lines ``lines`` (``name: value`` and CRLF each, lowercase names, checked and
        ``content-length`` among them), ``body``. False, having done nothing, where the answer
        must go as ASGI messages instead: to a reader that stopped reading (``send`` waits for
        it), or where ``send`` raises (an answer already started, an unknown status)."""
        ...


class Doors(Protocol):
    """The app's fast path for the front doors' POSTs (``server.api.fast_lane.Doors``)."""

    raw_paths: frozenset[bytes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def uvicorn_options(
    limits: HttpLimits, busy: ASGIApp, doors: Doors | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.Config`` that apply ``limits``; ``busy`` answers requests
    past ``max_connections``; ``doors`` takes the front doors' POSTs (see the module's
    docstring)."""
    options: dict[str, Any] = {"timeout_keep_alive": limits.keep_alive_timeout}
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = guarded_httptools(limits, busy, doors)
    else:
        options["http"] = "h11"
        options["h11_max_incomplete_event_size"] = limits.max_header_bytes
        options["limit_concurrency"] = limits.max_connections
    return options


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


def guarded_httptools(
    limits: HttpLimits, busy: ASGIApp, doors: Doors | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` enforced (and ``doors``, the module's
    docstring)."""
    from uvicorn.protocols.http.httptools_impl import (  # noqa: PLC0415
        HEADER_RE,
        HEADER_VALUE_RE,
        STATUS_LINE,
        HttpToolsProtocol,
        RequestResponseCycle,
    )
    from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string  # noqa: PLC0415

    # The server's own header lines, for the default headers uvicorn renews each second.
    server_lines: list[Any] = [None, None]

    def lines_of(defaults: list[tuple[bytes, bytes]]) -> bytes | None:
        if server_lines[0] is not defaults:
            ok = not any(HEADER_RE.search(n) or HEADER_VALUE_RE.search(v) for n, v in defaults)
            built = b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in defaults)
            server_lines[:] = defaults, built if ok else None
        lines: bytes | None = server_lines[1]
        return lines

    class DoorCycle(RequestResponseCycle):
        """uvicorn's request cycle, for a door's POST: it also answers in one call."""

        def answer(self, status: int, lines: bytes, body: bytes | memoryview) -> bool:
            """``Answer``: what ``send`` does for ``http.response.start`` with ``lines`` and
            ``http.response.body`` with ``body``, in one write. A door's POST is never HEAD, and
            ``lines`` carry ``content-length`` and no ``connection``."""
            if self.disconnected:
                return True  # ``send`` drops what comes after the client left
            if self.response_started or self.flow.write_paused:
                return False  # ``send``'s error, or its wait for the reader
            status_line = STATUS_LINE.get(status)
            own = lines_of(self.default_headers)
            if status_line is None or own is None:
                return False  # ``send``'s error
            self.response_started = True
            self.waiting_for_100_continue = False
            if self.access_log:
                scope = self.scope
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(scope),
                    scope["method"],
                    get_path_with_query_string(scope),
                    scope["http_version"],
                    status,
                )
            keep_alive = self.keep_alive
            self.chunked_encoding = False  # by content-length, all of it sent here
            end = b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
            transport = cast(OneWriteTransport, self.transport)
            transport.write_whole(b"".join((status_line, own, lines, end, body)))
            self.response_complete = True
            self.message_event.set()
            if not keep_alive:
                self.transport.close()
            self.on_response()
            return True

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._headers_done = False
            self._header_bytes = 0
            self._refusal: tuple[int, str] | None = None
            self._header_timer: asyncio.TimerHandle | None = None
            self._headers_since: float | None = None
            """When the headers now awaited began to be awaited (None: none are)."""
            self._lost = False
            self._watchers: list[Callable[[], None]] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            # A response's head leaves with its body, in one write (``one_write.py``).
            self.transport = cast(asyncio.Transport, OneWriteTransport(self.transport, self.loop))
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)
            self._lost = True
            watchers, self._watchers = self._watchers, []
            for callback in watchers:
                callback()

        # -- DisconnectHook ---------------------------------------------------------------------

        def watch(self, callback: Callable[[], None]) -> bool:
            if self._lost:
                return False
            self._watchers.append(callback)
            return True

        def unwatch(self, callback: Callable[[], None]) -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        def data_received(self, data: bytes) -> None:
            if not self._headers_done:
                self._header_bytes += len(data)
                if self._headers_since is None:
                    self._await_headers()
            super().data_received(data)
            if (
                not self._headers_done
                and self._header_bytes > limits.max_header_bytes
                and not self.transport.is_closing()
            ):
                self._refuse(431, f"Request headers exceed {limits.max_header_bytes} bytes.")

        # -- parser callbacks -------------------------------------------------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # Beside any extension uvicorn may announce. Its scope type allows only dicts there;
            # ASGI allows any value.
            self.scope.setdefault("extensions", {})[DISCONNECT] = self  # type: ignore[assignment]

        def on_header(self, name: bytes, value: bytes) -> None:
            # uvicorn's (the name lowercased, the value's trailing whitespace dropped, ``Expect:
            # 100-continue`` noted) with the count, in one call per header rather than two.
            headers = self.headers
            if len(headers) >= limits.max_headers:
                self._refusal = (431, f"More than {limits.max_headers} request headers.")
                raise _Refused
            name = name.lower()
            value = value.rstrip(b" \t")
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            headers.append((name, value))

        def on_headers_complete(self) -> None:
            self._headers_done = True
            self._headers_since = None
            cap = limits.max_connections
            if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
                # The count uvicorn's ``limit_concurrency`` keeps, answered by ``busy``.
                self.logger.warning("Exceeded the connection limit (server.http.max_connections).")
                # The request cycle starts with ``self.app`` as it is during this call.
                app, self.app = self.app, busy
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
            elif (
                doors is not None
                and self.url in doors.raw_paths  # a query string or an escape: the usual way
                and not self.root_path
                and self.parser.get_method() == b"POST"
                and not self.parser.should_upgrade()
            ):
                self._to_doors(doors)
            else:
                super().on_headers_complete()

        def _to_doors(self, doors: Doors) -> None:
            """What uvicorn's ``on_headers_complete`` does, for a door's POST: the path is the
            request line's target as it is (no query string, no escape, no root path), and the
            cycle a ``DoorCycle``, its ``answer`` in the scope."""
            parser = self.parser
            scope = self.scope
            version = parser.get_http_version()
            scope["method"] = "POST"
            if version != "1.1":
                scope["http_version"] = version
            scope["path"] = self.url.decode("ascii")
            scope["raw_path"] = self.url
            scope["query_string"] = b""
            before = self.cycle
            self.cycle = cycle = DoorCycle(
                scope=scope,
                transport=self.transport,
                flow=self.flow,
                logger=self.logger,
                access_logger=self.access_logger,
                access_log=self.access_log,
                default_headers=self.server_state.default_headers,
                message_event=asyncio.Event(),
                expect_100_continue=self.expect_100_continue,
                keep_alive=version != "1.0" and parser.should_keep_alive(),
                on_response=self.on_response_complete,
            )
            scope["extensions"][ANSWER] = cycle.answer  # type: ignore[assignment]
            app = cast(Any, doors)
            if before is None or before.response_complete:
                self._start_asgi_task(cycle, app)
            else:  # pipelined: after the answers before it
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, app))

        def on_message_complete(self) -> None:
            super().on_message_complete()
            # What arrives next is the next request's headers.
            self._headers_done = False
            self._header_bytes = 0

        def send_400_response(self, msg: str) -> None:
            # The parser reports a callback's refusal as a parse error: answer it as itself.
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                super().send_400_response(msg)

        # -- limits -----------------------------------------------------------------------------

        def _await_headers(self) -> None:
            """Headers are awaited from now on (a connection opened, a request began): they must
            be complete ``header_timeout`` seconds from now. One timer per connection, not per
            request: it looks, when it fires, at the request awaited then, and re-arms itself for
            what that one has left (a timer armed and cancelled per request cost ~0.5 us)."""
            self._headers_since = self.loop.time()
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    limits.header_timeout, self._headers_too_slow
                )

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            since = self._headers_since
            if since is None or self.transport.is_closing():
                return  # none awaited: the next request arms it again
            left = since + limits.header_timeout - self.loop.time()
            if left > 0:  # a later request than the one it was armed for
                self._header_timer = self.loop.call_later(left, self._headers_too_slow)
                return
            if self._header_bytes == 0:
                self.transport.close()  # never said anything: nothing to answer
            else:
                self._refuse(408, "Request headers were not received in time.")

        def _refuse(self, status: int, message: str) -> None:
            self._disarm()
            body = message.encode()
            head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
            self.transport.write(
                head
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
            self.transport.close()

    return GuardedHttpToolsProtocol
