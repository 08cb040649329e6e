"""Graceful shutdown: on SIGTERM ``/ready`` turns 503 first, then the listener closes, requests and
streams in flight finish up to the drain timeout, and what is left is cut off cleanly."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.faults import FaultyOpenAI
from tests.resilience_support import contents, settled, sse_events, wait_until
from tests.support import PuenteProcess

MESSAGES = [{"role": "user", "content": "hola"}]


def _config(fake: FaultyOpenAI, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "models": [{"name": "m", "provider": "openai_compatible", "base_url": fake.base_url}],
    }


class _Client(threading.Thread):
    """One request in the background; ``first`` is set once the first bytes of the answer came."""

    def __init__(self, puente: PuenteProcess, fake: dict[str, Any], *, stream: bool) -> None:
        super().__init__(daemon=True)
        self.url = puente.base_url + "/chat/completions"
        self.body = {"model": "m", "messages": MESSAGES, "stream": stream, "fake": fake}
        self.first = threading.Event()
        self.status = 0
        self.text = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=30) as response:
                self.status = response.status_code
                for piece in response.iter_text():
                    self.first.set()
                    self.text += piece
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first.set()


def _exited(puente: PuenteProcess, within: float) -> None:
    assert puente.proc is not None
    code = puente.proc.wait(within)
    assert code in (0, -signal.SIGTERM), puente.logs()  # uvicorn re-raises the signal it got
    assert "Traceback" not in puente.logs()


def test_sigterm_drains_requests_in_flight_then_exits(faulty: FaultyOpenAI, tmp_path: Path) -> None:
    puente = PuenteProcess(_config(faulty, drain_delay=0.6, drain_timeout=10), tmp_path).start()
    try:
        words = " ".join(f"w{i}" for i in range(20))
        stream = _Client(puente, {"reply": words, "delay": 0.05}, stream=True)
        whole = _Client(puente, {"delay": 1.0}, stream=False)
        stream.start()
        whole.start()
        assert stream.first.wait(5)
        time.sleep(0.1)  # the whole answer is in flight too

        puente.signal(signal.SIGTERM)
        ready = httpx.get(puente.url + "/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "detail": "shutting down"}
        # During drain_delay the listener still takes requests, for the load balancer's sake.
        served = httpx.post(
            puente.base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            timeout=5,
        )
        assert served.status_code == 200

        def refused() -> bool:
            try:
                httpx.get(puente.url + "/health", timeout=1)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                # Refused, or (while the listener closes) accepted from the backlog and then
                # dropped: closed before an answer, or reset by the kernel as the socket goes.
                return True
            return False

        wait_until(refused, timeout=3, what="the listener to close")
        stream.join(10)
        whole.join(10)
        assert stream.error is None and whole.error is None
        events = sse_events(stream.text)
        assert stream.status == 200 and events[-1] == "data: [DONE]"
        assert not any(e.startswith("event: error") for e in events)
        assert contents(events) == words  # the stream finished whole
        assert whole.status == 200 and '"chat.completion"' in whole.text
        _exited(puente, within=5)
        settled(faulty)
    finally:
        puente.stop()


def test_past_the_drain_timeout_requests_are_cut_off_cleanly(
    faulty: FaultyOpenAI, tmp_path: Path
) -> None:
    drain_timeout = 1.0
    puente = PuenteProcess(_config(faulty, drain_timeout=drain_timeout), tmp_path).start()
    try:
        words = " ".join(f"w{i}" for i in range(200))  # ten seconds of stream
        stream = _Client(puente, {"reply": words, "delay": 0.05}, stream=True)
        whole = _Client(puente, {"delay": 10}, stream=False)
        stream.start()
        whole.start()
        assert stream.first.wait(5)
        time.sleep(0.1)

        signalled = time.monotonic()
        puente.signal(signal.SIGTERM)
        stream.join(10)
        whole.join(10)
        assert time.monotonic() - signalled < 8  # cut off, not the 10 s both would take

        events = sse_events(stream.text)
        assert stream.status == 200
        assert events[-1] == "data: [DONE]"
        assert events[-2].startswith("event: error\ndata: ")
        assert '"code":"server_shutdown"' in events[-2]
        assert len(events) > 3  # what was generated before the cut-off reached the client
        assert whole.status == 503
        assert '"code":"server_shutdown"' in whole.text
        _exited(puente, within=5)
        settled(faulty)
        assert len(faulty.state.closed) == 2  # both upstream requests were closed, not left open
    finally:
        puente.stop()
