"""The Anthropic provider alone, in process: CPU per answer (whole, or a stream of ``--chunks``
events) with 32 callers at once against the mock's Messages API, and where it goes (cProfile).

No gateway around it, so what moves is the provider's own work: building the request, the HTTP
exchange (``vendor_http``), reading the answer. ``--tree`` runs another checkout's provider with
the same mock and loop (its own ``server`` package first on ``sys.path``), for before/after in one
run. The mock runs on CPU 1 and the provider on CPU 0 where there are two.

    .venv/bin/python bench/profile_anthropic.py --tree /work/main --rounds 3
    .venv/bin/python bench/profile_anthropic.py --profile stream    # the top functions
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from procs import ROOT, start_mock, workdir

WORKER = r"""
import asyncio, cProfile, pstats, sys, time
sys.path.insert(0, sys.argv[1])
import orjson
try:
    import uvloop
except ImportError:
    uvloop = None
from server.config import ModelConfig
from server.pipeline.request import ChatRequest
from server.providers.anthropic_provider import AnthropicProvider
from server.providers.cloud import CloudClients

base, mode, n, profile = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"

async def main() -> None:
    config = ModelConfig(name="m", provider="anthropic", model="bench-model", base_url=base,
                         api_key="bench-key", retries=0)
    clients = CloudClients()
    provider = AnthropicProvider(config, clients)
    raw = orjson.dumps({"model": "m", "stream": mode == "stream",
                        "messages": [{"role": "user", "content": "Say hello in a few words."}]})

    async def one() -> None:
        request = ChatRequest.parse(raw)
        if mode == "whole":
            await provider.complete(request)
            return
        async with provider.stream(request) as chunks:
            async for _ in chunks:
                pass

    async def run(count: int) -> None:
        gate = asyncio.Semaphore(32)
        async def guarded() -> None:
            async with gate:
                await one()
        await asyncio.gather(*(guarded() for _ in range(count)))

    await run(n // 10)  # warm-up: connections, caches
    profiler = cProfile.Profile()
    started = time.process_time()
    if profile:
        profiler.enable()
    await run(n)
    if profile:
        profiler.disable()
    print(f"{(time.process_time() - started) / n * 1e6:.1f}")
    await clients.aclose()
    if profile:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)

(uvloop.run if uvloop else asyncio.run)(main())
"""


def measure(tree: Path, base: str, mode: str, n: int, *, profile: bool, cpu: int | None) -> float:
    argv = [sys.executable, "-c", WORKER, str(tree), base, mode, str(n), "1" if profile else "0"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=tree)
    if profile:
        print(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="also measure this checkout's provider")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--profile", choices=("whole", "stream"), help="print a cProfile")
    args = parser.parse_args()
    pinned = (os.cpu_count() or 1) >= 2
    where = workdir()
    mock, base = start_mock(where, 1 if pinned else None, args.chunks, 0.0)
    try:
        root = base.removesuffix("/v1")
        if args.profile:
            measure(
                ROOT, root, args.profile, args.requests, profile=True, cpu=0 if pinned else None
            )
            return
        trees = [("before", args.tree)] if args.tree else []
        trees.append(("after", ROOT))
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):  # interleaved: every tree, every mode, then again
            for mode in ("whole", "stream"):
                for label, tree in trees:
                    us = measure(
                        tree, root, mode, args.requests, profile=False, cpu=0 if pinned else None
                    )
                    results.setdefault((label, mode), []).append(us)
                    load = os.getloadavg()[0]
                    print(f"  {label:<7} {mode:<7} {us:8.1f} us/answer  load {load:.2f}")
        for (label, mode), values in results.items():
            print(f"{label:<7} {mode:<7} median {statistics.median(values):8.1f} us CPU per answer")
    finally:
        mock.stop()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
