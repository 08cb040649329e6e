"""A provider's call alone: CPU per request (or per stream) of each provider kind, side by side
across checkouts.

Each provider is built as the gateway builds it (``build_provider`` with its own ``Clients``) in
a process of the checkout's own interpreter (uvloop, as Puente) pinned to CPU 0, and called by 32
callers at once against the fast mock upstream in that kind's wire format (bench/mock_upstream.py,
on CPU 1): ``complete`` for a whole answer, ``stream`` (every chunk encoded, as a door would) with
``--stream``. What is left is the provider's own work and its HTTP client's, without the
pipeline, the doors and the load generator, so a change in ``server/providers`` shows up in a
minute; the whole gateway is bench_gateway.py's and bench_hotpath.py's to measure.

Checkouts take turns, round by round, the first changing each round; reported: the median and
minimum over every burst, and the load average.

    .venv/bin/python bench/bench_providers.py --ab /work/base4 ''            # this checkout vs one
    .venv/bin/python bench/bench_providers.py --kinds openai gemini --stream
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import orjson
from procs import ROOT, start_mock, workdir

KINDS = ("openai_compatible", "openai", "anthropic", "gemini")

# Run by the checkout's interpreter: argv = mock URL, kind, calls per burst, bursts, stream.
_CALLER = """
import asyncio, sys, time
import aiohttp, orjson, uvloop
from server.config import ModelConfig
from server.pipeline.request import ChatRequest
from server.providers import Clients, build_provider

url, kind, calls, bursts, stream = sys.argv[1:6]
calls, bursts, stream = int(calls), int(bursts), stream == "1"

async def main():
    entry = {"name": "m", "provider": kind, "model": "bench-model", "retries": 0}
    entry["base_url"] = url if kind in ("openai_compatible", "openai") else url.removesuffix("/v1")
    if kind != "openai_compatible":
        entry["api_key"] = "bench-key"
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
    request = ChatRequest.from_body({**body, "stream": stream})
    async with aiohttp.ClientSession() as session:
        provider = build_provider(ModelConfig(**entry), Clients(session))

        async def caller(n):
            for _ in range(n):
                if stream:
                    async with provider.stream(request) as chunks:
                        async for chunk in chunks:
                            chunk.encode()
                else:
                    await provider.complete(request)

        await asyncio.gather(*(caller(10) for _ in range(32)))  # connections opened, code warm
        spent = []
        for _ in range(bursts):
            started = time.process_time()
            await asyncio.gather(*(caller(calls // 32) for _ in range(32)))
            spent.append((time.process_time() - started) / (calls // 32 * 32) * 1e6)
        await provider.aclose()
    print(orjson.dumps(spent).decode())

uvloop.run(main())
"""


def burst(tree: Path, url: str, kind: str, args: argparse.Namespace) -> list[float]:
    python = tree / ".venv" / "bin" / "python"
    argv = [str(python), "-c", _CALLER, url, kind, str(args.calls), str(args.bursts)]
    argv.append("1" if args.stream else "0")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        ["taskset", "-c", "0", *argv], cwd=tree, env=env, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree} {kind}: {done.stderr.decode()[-2000:]}")
    spent: list[float] = orjson.loads(done.stdout.splitlines()[-1])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ab", nargs="+", default=[""], metavar="TREE", help="'' is this one")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--stream", action="store_true", help="streams of 32 chunks")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--bursts", type=int, default=2, help="per process")
    parser.add_argument("--calls", type=int, default=3200, help="per burst")
    args = parser.parse_args()
    trees = [Path(tree) if tree else ROOT for tree in args.ab]
    mock, url = start_mock(workdir(), 1, 32, 0.0)
    loads = [os.getloadavg()[0]]
    try:
        for kind in args.kinds:
            spent: dict[Path, list[float]] = {tree: [] for tree in trees}
            for round_ in range(args.rounds):
                turn = round_ % len(trees)
                for tree in trees[turn:] + trees[:turn]:
                    spent[tree] += burst(tree, url, kind, args)
                loads.append(os.getloadavg()[0])
            what = "stream" if args.stream else "request"
            for tree in trees:
                print(
                    f"{kind:18} {tree!s:28} CPU us/{what}: "
                    f"median {statistics.median(spent[tree]):6.1f}  min {min(spent[tree]):6.1f}"
                )
    finally:
        mock.stop()
    print(f"load average {min(loads):.2f}-{max(loads):.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
