"""A client that leaves closes the upstream request at once (the engine stops generating)."""

from __future__ import annotations

import contextlib
import socket
import time

import orjson

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


def _send_and_leave(puente: InProcessPuente, body: dict[str, object], wait: float) -> None:
    """Send a raw HTTP request, read a little, then drop the connection."""
    payload = orjson.dumps(body)
    with socket.create_connection(("127.0.0.1", puente.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"X-Request-Id: leaver-"
            + str(time.monotonic_ns()).encode()
            + b"\r\n"
            + b"Content-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )
        sock.settimeout(wait)
        with contextlib.suppress(TimeoutError):
            sock.recv(4096)


def _wait_closed(fake: FakeOpenAI, timeout: float = 3.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fake.state.closed:
            return fake.state.closed[-1].at
        time.sleep(0.01)
    raise AssertionError("the upstream never saw its connection closed")


def test_streaming_client_leaving_closes_the_upstream(
    puente: InProcessPuente, fake: FakeOpenAI
) -> None:
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": "count " * 200}],
        "fake": {"delay": 0.1},  # twenty seconds of stream
    }
    _send_and_leave(puente, body, wait=0.3)
    left = time.monotonic()
    closed_at = _wait_closed(fake)
    # Seen long before the stream would have ended by itself (a busy machine is not that slow).
    assert closed_at - left < 10
    assert fake.state.closed[-1].request_id.startswith("leaver-")


def test_non_streaming_client_leaving_closes_the_upstream(
    puente: InProcessPuente, fake: FakeOpenAI
) -> None:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "think hard"}],
        "fake": {"delay": 30},
    }
    _send_and_leave(puente, body, wait=0.3)
    left = time.monotonic()
    closed_at = _wait_closed(fake)
    assert closed_at - left < 10  # not when the 30 s answer would have been ready
    deadline = time.monotonic() + 2
    while fake.state.in_progress and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.state.in_progress == 0
