"""Which HTTP client should Puente use to call its upstreams? httpx, httpx2 and aiohttp, measured.

Each client runs in its own process (uvloop, as Puente does), pinned to CPU 0, against the fast
mock upstream (bench/mock_upstream.py) pinned to CPU 1, doing what the OpenAI-compatible provider
does: POST a chat request, read the whole JSON answer and parse it, or read an SSE stream line by
line. Scenarios: non-streaming at c=1 (latency) and c=32 (requests/s), streaming at c=32.
Also reported: the client process's CPU time per request, which is what a gateway pays.

    .venv/bin/python bench/bench_clients.py                # ~2 minutes
    .venv/bin/python bench/bench_clients.py --repeat 5 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]

# Run as ``python bench/bench_clients.py``: its own folder is on sys.path.
from loadgen import percentiles, request_body
from procs import cpu_seconds, start_mock, workdir

CLIENTS = ("aiohttp", "httpx", "httpx2")
SCENARIOS = (("non-streaming", False, 1), ("non-streaming", False, 32), ("streaming", True, 32))
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}

Call = Callable[[], Awaitable[int]]


# -- the worker: one client, one scenario, in its own process --------------------------------


async def _aiohttp(url: str, payload: bytes, stream: bool, concurrency: int) -> tuple[Call, Any]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    )

    async def call() -> int:
        async with session.post(url, data=payload, headers=HEADERS) as response:
            if stream:
                return len([line async for line in response.content if line[:5] == b"data:"])
            orjson.loads(await response.read())
            return 0

    return call, session.close


async def _httpx_like(
    module: Any, url: str, payload: bytes, stream: bool, concurrency: int
) -> tuple[Call, Any]:
    client = module.AsyncClient(
        timeout=module.Timeout(60.0),
        limits=module.Limits(max_connections=None, max_keepalive_connections=concurrency),
    )

    async def call() -> int:
        if stream:
            async with client.stream("POST", url, content=payload, headers=HEADERS) as response:
                return len([line async for line in response.aiter_lines() if line[:5] == "data:"])
        response = await client.post(url, content=payload, headers=HEADERS)
        orjson.loads(response.content)
        return 0

    return call, client.aclose


async def work(
    client: str, url: str, *, stream: bool, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    payload = request_body(stream)
    if client == "aiohttp":
        call, close = await _aiohttp(url, payload, stream, concurrency)
    else:
        module = __import__(client)
        call, close = await _httpx_like(module, url, payload, stream, concurrency)
    latencies: list[float] = []
    frames = 0
    start = time.perf_counter()
    measure_from, deadline = start + warmup, start + warmup + duration
    cpu_at_start: float | None = None

    async def worker() -> None:
        nonlocal frames, cpu_at_start
        while True:
            sent = time.perf_counter()
            if sent >= deadline:
                return
            if sent >= measure_from and cpu_at_start is None:
                cpu_at_start = time.process_time()
            got = await call()
            done = time.perf_counter()
            if sent >= measure_from and done <= deadline:
                latencies.append(done - sent)
                frames += got

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - (cpu_at_start or 0.0)
    await close()
    return {
        "client": client,
        "requests": len(latencies),
        "rps": len(latencies) / duration,
        "frames_per_s": frames / duration,
        "latency_ms": percentiles(latencies),
        "cpu_us_per_request": cpu / len(latencies) * 1e6 if latencies else float("nan"),
    }


def worker_main(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    coro = work(
        args.worker,
        args.url,
        stream=args.stream,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
    )
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


# -- the driver ------------------------------------------------------------------------------


def run_worker(
    client: str, url: str, stream: bool, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", client, "--url", url]
    argv += ["-c", str(concurrency), "--duration", str(args.duration)]
    argv += ["--warmup", str(args.warmup)]
    if stream:
        argv.append("--stream")
    if args.pin:
        argv += ["--cpu", "0"]
    done = subprocess.run(
        argv, capture_output=True, check=False, timeout=args.duration + args.warmup + 120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} worker failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=32, help="content chunks per stream")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", type=Path)
    # Worker mode (internal): run one client and print its result.
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("-c", "--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    where = workdir()
    mock, base = start_mock(where, 1 if args.pin else None, args.chunks, 0.0)
    url = base + "/chat/completions"
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for rep in range(args.repeat):
            for name, stream, concurrency in SCENARIOS:
                key = f"{name} c={concurrency}"
                for client in clients:
                    before = cpu_seconds(mock.pid)
                    r = run_worker(client, url, stream, concurrency, args)
                    r["mock_cpu_s"] = cpu_seconds(mock.pid) - before
                    results.setdefault(key, {}).setdefault(client, []).append(r)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {key:<20} {client:<8} "
                        f"{r['rps']:>8.0f} req/s  p50 {r['latency_ms']['p50']:.3f} ms  "
                        f"p99 {r['latency_ms']['p99']:.3f} ms  "
                        f"cpu {r['cpu_us_per_request']:.0f} us/req",
                        flush=True,
                    )
    finally:
        mock.stop()
        shutil.rmtree(where, ignore_errors=True)

    def med(key: str, client: str, pick: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(pick(r) for r in results[key][client])

    print()
    print(
        f"Upstream client comparison: {os.cpu_count()} CPUs, "
        f"{'client on CPU 0, mock on CPU 1' if args.pin else 'unpinned'}, "
        f"{args.repeat} repeats x {args.duration:g} s, medians; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    header = f"{'scenario':<20} {'client':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + f" {'CPU us/req':>10} {'vs aiohttp':>10}")
    for key in results:
        base_rps = med(key, "aiohttp", lambda r: r["rps"]) if "aiohttp" in clients else None
        for client in clients:
            rps = med(key, client, lambda r: r["rps"])
            ratio = f"{rps / base_rps:.2f}x" if base_rps else "-"
            print(
                f"{key:<20} {client:<8} {rps:>8.0f} "
                f"{med(key, client, lambda r: r['latency_ms']['p50']):>8.3f} "
                f"{med(key, client, lambda r: r['latency_ms']['p99']):>8.3f} "
                f"{med(key, client, lambda r: r['cpu_us_per_request']):>10.0f} {ratio:>10}"
            )
    if args.json:
        args.json.write_bytes(orjson.dumps({"args": vars(args), "results": results}, default=str))


if __name__ == "__main__":
    main()
