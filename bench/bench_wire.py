"""A front door from request bytes to answer bytes: CPU per request in one process, no sockets.

bench/bench_pipe.py's app (keys and limits on, SQLite, an upstream answering from memory) behind
``puente serve``'s own HTTP protocol (``server/lifecycle/http_guard.py``, as ``uvicorn_options``
builds it) on in-memory connections, on uvloop: what bench_pipe leaves out — parsing the
request, uvicorn's request cycle, ``Doors``, the answer's head and its write — without the
system calls, the upstream client and a load generator sharing the core. Each connection sends
the load generator's request (bench/loadgen.py) again as soon as its answer is written.

    .venv/bin/python bench/bench_wire.py [--requests 20000] [--concurrency 32] [--repeat 5]
    .venv/bin/python bench/bench_wire.py --ab /work/base4 '' --repeat 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
import yaml

# bench_pipe puts the checkout under test first on sys.path (``--ab``: BENCH_TREE).
from bench_pipe import MODEL, SECRET, InstantProvider, _store_key, ab
from loadgen import http_request, request_body
from uvicorn.server import ServerState

from server.api.envelopes import over_capacity
from server.app import create_app
from server.config import HttpLimits, Settings, load_config
from server.lifecycle.http_guard import uvicorn_options

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]

REQUEST = http_request("http://127.0.0.1:8000/v1/chat/completions", request_body(False, MODEL))
REQUEST = REQUEST.replace(b"Bearer bench", f"Bearer {SECRET}".encode())


class Connection:
    """An in-memory transport: each write is one whole answer (``one_write`` joins a head to its
    body), after which its client sends the next request, in the next turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.run: Run | None = None
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"answered {bytes(data[:200])!r}")
        assert self.run is not None
        self.loop.call_soon(self.run.answered, self)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the server closed a connection")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Run:
    """``requests`` answers over the connections, each sending again once answered."""

    def __init__(self, requests: int) -> None:
        self.left = requests
        self.in_flight = 0
        self.done = asyncio.get_running_loop().create_future()

    def start(self, connection: Connection) -> None:
        if self.left > 0:
            self.left -= 1
            self.in_flight += 1
            connection.protocol.data_received(REQUEST)

    def answered(self, connection: Connection) -> None:
        self.in_flight -= 1
        self.start(connection)
        if self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)


def _connections(app: Any, limits: HttpLimits, count: int) -> list[Connection]:
    """``count`` connections to ``app`` through ``puente serve``'s HTTP protocol."""
    loop = asyncio.get_running_loop()
    # Kept alive between bursts, however long ``--ab`` keeps a process waiting for its turn.
    limits = limits.model_copy(update={"keep_alive_timeout": 24 * 3600})
    options = uvicorn_options(limits, over_capacity, app.doors)
    config = uvicorn.Config(app, access_log=False, log_config=None, lifespan="off", **options)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Sat, 05 Dec 2026 00:00:00 GMT"), (b"server", b"uvicorn")]
    connections = []
    for _ in range(count):
        connection = Connection(loop)
        connection.protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state={}, _loop=loop
        )
        connection.protocol.connection_made(connection)
        connections.append(connection)
    return connections


async def _run(connections: list[Connection], requests: int) -> float:
    run = Run(requests)
    for connection in connections:
        connection.run = run
    started = time.process_time()
    for connection in connections:
        run.start(connection)
    await run.done
    return (time.process_time() - started) / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="puente-bench-wire-"))
    await _store_key(folder / "puente.db")
    path = folder / "puente.yaml"
    config = {"models": [{"name": MODEL, "provider": "openai_compatible", "base_url": "http://x"}]}
    path.write_text(yaml.safe_dump(config))
    settings = Settings(config=load_config(path), config_path=path)
    app = create_app(settings, {MODEL: InstantProvider()})  # type: ignore[dict-item]
    async with app.router.lifespan_context(app):
        connections = _connections(app, settings.config.server.http, args.concurrency)
        await _run(connections, 2000)  # warm-up: caches, the usage writer
        if args.burst:
            # Driven by ``--ab``: one burst of ``args.burst`` requests per line read.
            loop = asyncio.get_running_loop()
            print(f"# {sys.modules['server'].__file__}", file=sys.stderr)
            while await loop.run_in_executor(None, sys.stdin.readline):
                print(f"{await _run(connections, args.burst):.2f}", flush=True)
            return
        figures = [await _run(connections, args.requests) for _ in range(args.repeat)]
        print(
            f"cpu us/request: median {statistics.median(figures):.1f}  "
            f"min {min(figures):.1f}  all {' '.join(f'{f:.1f}' for f in figures)}  "
            f"load {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--burst", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ab",
        nargs="+",
        metavar="TREE",
        help="checkouts to compare, each with its .venv ('' is this one)",
    )
    parsed = parser.parse_args()
    if parsed.ab:
        ab(parsed, __file__)
    elif uvloop is not None:
        uvloop.run(main(parsed))
    else:
        asyncio.run(main(parsed))
