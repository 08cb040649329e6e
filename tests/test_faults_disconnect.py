"""A thousand clients that leave mid-stream: every upstream connection is closed, and Puente's
open file descriptors do not grow."""

from __future__ import annotations

import asyncio
import time

import orjson

from tests.fakes.faults import FaultyOpenAI
from tests.resilience_support import metric, open_fds, settled, wait_until
from tests.support import PuenteProcess

PROBE_CYCLE = 6.0  # seconds: longer than the prober's interval (server/providers, 5 s)
LONG = " ".join(["palabra"] * 200)  # two seconds of stream: nobody waits for its end


async def _leave_mid_stream(port: int, index: int) -> None:
    body = orjson.dumps(
        {
            "model": "flaky",
            "messages": [{"role": "user", "content": "hola"}],
            "stream": True,
            "fake": {"reply": LONG, "delay": 0.01},
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: leaver-{index}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        seen = b""
        while b"data: {" not in seen:  # the first chunk arrived: leave
            data = await reader.read(65536)
            assert data, f"Puente closed the stream first: {seen[:200]!r}"
            seen += data
        assert seen.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await writer.wait_closed()


async def _leave(port: int, count: int, first: int, concurrency: int = 25) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await _leave_mid_stream(port, index)

    await asyncio.gather(*(one(first + i) for i in range(count)))


def _quiet(puente: PuenteProcess, fake: FaultyOpenAI) -> int:
    """Wait until nothing is in flight anywhere; then Puente's open descriptors.

    Puente's own background work (health probes of a down replica every 5 s, each connection
    kept in the pool for 4 s) holds a descriptor part of the time: the count is sampled over one
    probe cycle and the lowest kept, so only descriptors that stay open count.
    """
    settled(fake)
    wait_until(
        lambda: metric(puente.url, "puente_requests_in_flight", model="flaky") == 0,
        what="Puente to finish every request",
    )
    assert puente.proc is not None
    pid = puente.proc.pid
    lowest = open_fds(pid)
    deadline = time.monotonic() + PROBE_CYCLE
    while time.monotonic() < deadline:
        time.sleep(0.1)
        lowest = min(lowest, open_fds(pid))
    return lowest


async def test_a_thousand_clients_leaving_mid_stream_leave_nothing_open(
    resilient: PuenteProcess, faulty: FaultyOpenAI
) -> None:
    await _leave(resilient.port, 50, first=0)  # warm up: pools, caches, lazily built things
    baseline = await asyncio.to_thread(_quiet, resilient, faulty)
    faulty.reset()

    await _leave(resilient.port, 1000, first=1000)

    after = await asyncio.to_thread(_quiet, resilient, faulty)
    assert faulty.open_connections() == 0
    assert len(faulty.state.received) == 1000
    # The upstream saw each of the thousand connections closed while it was still streaming.
    assert len({c.request_id for c in faulty.state.closed}) == 1000
    assert after <= baseline, f"open fds grew from {baseline} to {after}"
    # And Puente still answers.
    await _leave(resilient.port, 1, first=5000)
