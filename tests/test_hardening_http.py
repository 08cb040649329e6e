"""The HTTP layer of ``puente serve`` bounds what an unauthenticated connection can hold
(issue 15, High 3): header bytes and count, slow headers, idle connections, open connections.
Raw sockets against a real ``puente serve``, since the limits live below the app."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from server.api.envelopes import over_capacity
from server.config import HttpLimits
from server.lifecycle.http_guard import uvicorn_options
from tests.support import PuenteProcess

HTTP = {
    "max_header_bytes": 8192,
    "max_headers": 20,
    "header_timeout": 1.0,
    "keep_alive_timeout": 1,
    "max_connections": 50,
}
# How long a test waits for the server to act: far past every limit above, so a slow machine
# cannot fail a test, while a server without the limit never answers at all.
PATIENCE = 15.0


@pytest.fixture(scope="module")
def puente(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PuenteProcess]:
    config = {"server": {"http": HTTP}, "models": []}
    with PuenteProcess(config, tmp_path_factory.mktemp("http")) as proc:
        yield proc


def _connect(puente: PuenteProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", puente.port), timeout=PATIENCE)
    sock.settimeout(PATIENCE)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    received = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not piece:
            return received
        received += piece


def test_normal_requests_pass(puente: PuenteProcess) -> None:
    headers = {f"x-extra-{i}": "v" * 100 for i in range(10)}
    with httpx.Client(base_url=puente.url) as client:
        for _ in range(3):  # the same keep-alive connection
            assert client.get("/health", headers=headers).status_code == 200


def test_headers_past_the_byte_limit_get_431_and_a_closed_connection(
    puente: PuenteProcess,
) -> None:
    with _connect(puente) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        # Never finished: without the limit the server keeps reading (and holding) forever.
        try:
            for _ in range(64):
                sock.sendall(b"a" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us: what we want, and the answer was already sent
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_too_many_headers_get_431(puente: PuenteProcess) -> None:
    with _connect(puente) as sock:
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(HTTP["max_headers"] + 5))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_headers_sent_too_slowly_get_408(puente: PuenteProcess) -> None:
    with _connect(puente) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_never_speaks_is_closed(puente: PuenteProcess) -> None:
    with _connect(puente) as sock:
        assert _read_until_closed(sock) == b""


def test_an_idle_keep_alive_connection_is_closed(puente: PuenteProcess) -> None:
    with _connect(puente) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock)  # the answer, then the close once idle
    assert answer.startswith(b"HTTP/1.1 200 ")


def _post(puente: PuenteProcess, path: bytes, header: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """POST a small JSON body to ``path`` on a new connection, with one more ``header`` line; the
    answer's status line, headers and body (the server closes after it)."""
    body = b'{"model": "m", "messages": []}'
    with _connect(puente) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, header, len(body), body)
        )
        head, _, answer = _read_until_closed(sock).partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return status.encode(), headers, answer


def test_connections_past_the_cap_get_503_in_the_callers_envelope(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cap = 5
    # Slow headers allowed here, so the held connections stay open for as long as the test needs.
    http = {**HTTP, "max_connections": cap, "header_timeout": 120}
    config = {"server": {"http": http}, "models": []}
    with PuenteProcess(config, tmp_path_factory.mktemp("cap"), name="cap") as puente:
        with ExitStack() as held:
            for _ in range(cap):
                held.enter_context(_connect(puente)).sendall(b"GET /health HTTP/1.1\r\n")
            # OpenAI's clients: a 503 they can read, with the wait they honour, then the close.
            status, headers, answer = _post(puente, b"/v1/chat/completions", b"Accept: */*")
            assert status.startswith(b"HTTP/1.1 503 ")
            assert headers["retry-after"] == "1" and headers["connection"] == "close"
            error = json.loads(answer)["error"]
            assert error["type"] == "service_unavailable" and error["code"] == "overloaded"
            assert "connection limit" in error["message"]
            # Anthropic's clients: its envelope, and the status its SDK reads as overloaded.
            status, headers, answer = _post(
                puente, b"/v1/messages", b"anthropic-version: 2023-06-01"
            )
            assert status.startswith(b"HTTP/1.1 529 ")
            assert json.loads(answer)["error"]["type"] == "overloaded_error"
        # Once they are gone (the server notices each close soon), it serves again.
        deadline = time.monotonic() + PATIENCE
        while (status_code := httpx.get(puente.url + "/health").status_code) == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status_code == 200


def test_the_defaults_bound_every_connection() -> None:
    options = uvicorn_options(HttpLimits(), over_capacity)
    assert options["timeout_keep_alive"] == 5
    assert HttpLimits().max_connections == 1000  # enforced by the protocol below
    assert "limit_concurrency" not in options  # uvicorn's own 503 is plain text
    assert isinstance(options["http"], type)  # the guarded httptools protocol
    assert HttpLimits().max_header_bytes == 32 * 1024
    assert HttpLimits().header_timeout == 10
