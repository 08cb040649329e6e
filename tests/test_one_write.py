"""A response's head leaves with the body written after it, in one socket write
(server/lifecycle/one_write.py), without delaying any byte past the turn of the event loop it
was written in, and without reordering or losing bytes when the connection closes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest

from server.lifecycle.one_write import OneWriteTransport
from tests.support import PuenteProcess


class Recorded:
    """The calls an asyncio transport got."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def _wrap() -> tuple[OneWriteTransport, Recorded]:
    raw = Recorded()
    loop = asyncio.get_running_loop()
    return OneWriteTransport(cast(asyncio.Transport, raw), loop), raw


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    transport, raw = _wrap()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.writes == []
    assert transport.get_write_buffer_size() > 0  # what is held counts as buffered
    transport.write(b"ok")
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    transport.write(b"more")  # not a head: straight through
    assert raw.writes[-1] == b"more"


async def test_a_head_alone_leaves_at_the_end_of_the_turn() -> None:
    transport, raw = _wrap()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport.write(b"later")
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"later"]


async def test_closing_sends_what_is_held_first_and_aborting_drops_it() -> None:
    transport, raw = _wrap()
    transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    transport.close()
    assert raw.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]
    assert raw.closed
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left to send
    assert len(raw.writes) == 1

    transport, raw = _wrap()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.abort()
    await asyncio.sleep(0)
    assert raw.writes == []
    assert raw.aborted


async def test_other_calls_reach_the_real_transport() -> None:
    transport, _ = _wrap()
    assert transport.get_extra_info("peername") == "info peername"
    assert not transport.is_closing()


# -- on the wire ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def puente(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PuenteProcess]:
    workdir: Path = tmp_path_factory.mktemp("one-write")
    with PuenteProcess({"models": []}, workdir) as proc:
        yield proc


def test_keep_alive_answers_arrive_whole_and_in_order(puente: PuenteProcess) -> None:
    with httpx.Client(base_url=puente.url) as client:
        for _ in range(5):  # one connection, one answer after another
            response = client.get("/health")
            assert response.status_code == 200
            assert response.json()["status"] == "ok"
            assert response.headers["x-request-id"]


def test_pipelined_requests_get_their_answers_in_order(puente: PuenteProcess) -> None:
    with socket.create_connection(("127.0.0.1", puente.port), timeout=15) as sock:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: r%d\r\n\r\n"
        sock.sendall(b"".join(request % i for i in range(3)))
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 3 or not received.endswith(b"}"):
            piece = sock.recv(65536)
            assert piece, received
            received += piece
    ids = [part.split(b"\r\n", 1)[0] for part in received.split(b"x-request-id: ")[1:]]
    assert ids == [b"r0", b"r1", b"r2"]
