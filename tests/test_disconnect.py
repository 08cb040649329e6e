"""A client that leaves closes the upstream request at once (the engine stops generating)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import gateway_config
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


def test_a_client_that_never_reads_does_not_hold_the_upstream(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    config = {**gateway_config(fake_upstream), "server": {"send_timeout": 0.5}}
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        # Far more than the socket buffers between Puente and the client hold.
        "fake": {"reply": "palabra " * 80_000, "delay": 0},
    }
    payload = orjson.dumps(body)
    with InProcessPuente(config, tmp_path) as puente:
        fake_upstream.reset()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", puente.port))
        try:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nX-Request-Id: never-reads\r\n"
                + b"Content-Length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            # The client holds its connection open and reads nothing; Puente gives up on it.
            _wait_closed(fake_upstream, timeout=30)
            assert fake_upstream.state.closed[-1].request_id == "never-reads"
            metrics = httpx.get(puente.url + "/metrics").text
            left = 'model="fake-model",provider="openai_compatible",status="499"'
            assert f"puente_requests_total{{{left}}} 1.0" in metrics
        finally:
            sock.close()
