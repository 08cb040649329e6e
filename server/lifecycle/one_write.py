"""A response's head and the body sent right after it leave in one socket write.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, and
the body as its own write when ``http.response.body`` follows — in the same turn of the event
loop for a whole answer, or a stream's first frames. Each write is a ``send`` system call, and on
a loopback or virtual NIC each costs about as much as everything else Puente does for a small
request (bench/README.md, "Core path cuts"). This transport wrapper holds a write that starts a
response (``HTTP/``) and sends it joined to the next write; if none comes in the same turn of the
loop, the head goes out alone at the end of that turn. Nothing waits longer than the turn it was
written in, so no byte is delayed behind another request's work, and the order of bytes on the
connection is unchanged. Every other call goes straight to the real transport.
"""

from __future__ import annotations

import asyncio
from typing import Any


class OneWriteTransport:
    """Wraps the asyncio transport of one server connection (see the module's docstring)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:5] == b"HTTP/":
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def write_whole(self, data: bytes) -> None:
        """Write ``data``, a whole answer, at once: after what is held (never, between answers;
        but the order of bytes is kept whatever comes)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def writelines(self, pieces: Any) -> None:
        self.write(b"".join(pieces))

    def flush(self) -> None:
        """Send what is held (at the end of the turn, or before the connection closes)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held else 0)

    def __getattr__(self, name: str) -> Any:
        # get_extra_info, pause_reading, resume_reading, set_protocol, …: the real transport's.
        return getattr(self._transport, name)
