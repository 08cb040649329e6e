"""How should the vendor-SDK providers reach their vendors? Measured per provider, side by side.

Puente's ``openai``, ``anthropic`` and ``gemini`` providers, exactly as the gateway builds them,
each in its own process pinned to CPU 0 (uvloop, as Puente), against the fast mock upstream in
that vendor's wire format (bench/mock_upstream.py) on CPU 1; a chat request answered whole, or
streamed, with 32 callers at once. Variants:

- ``httpx2``: the SDK on ``httpx2``'s own connection pool (Puente before issue 16);
- ``aiohttp``: the SDK on ``server/providers/aiohttp_transport.py`` (one aiohttp session);
- ``raw``: no SDK at all, for reference: the ``openai_compatible`` provider (aiohttp, orjson, bytes
  relayed), which is what the OpenAI wire format costs when spoken directly; for Anthropic, the
  same reading plus its translator on the parsed JSON (``anthropic_answer``); for Gemini, the same
  reading through ``gemini_answer`` (plain JSON, as the provider).

Reported: the provider process's CPU per request (or per stream), the figure a gateway pays.
Once a provider's chat path speaks HTTP itself (``vendor_http``, issue 16), its ``httpx2`` and
``aiohttp`` variants both measure that path; the comparison in ``bench/README.md`` was taken at
commit c7a27b0, before any did.

    .venv/bin/python bench/bench_vendor_clients.py                 # ~3 minutes
    .venv/bin/python bench/bench_vendor_clients.py --repeat 1 --duration 2
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

import orjson

try:
    import uvloop
except ImportError:  # plain asyncio works too, only slower
    uvloop = None  # type: ignore[assignment]

# Run as ``python bench/bench_vendor_clients.py``: its own folder is on sys.path.
from loadgen import request_body
from procs import ROOT, start_mock, workdir

VENDORS = ("openai", "anthropic", "gemini")
VARIANTS = ("httpx2", "aiohttp", "raw")

Call = Callable[[], Awaitable[int]]


# -- the worker: one provider, one variant, in its own process --------------------------------


def _config(vendor: str, base: str) -> Any:
    from server.config import ModelConfig  # noqa: PLC0415

    root = base.removesuffix("/v1")
    provider, url = {
        "openai": ("openai", base),
        "anthropic": ("anthropic", root),
        "gemini": ("gemini", root),
    }[vendor]
    return ModelConfig(name="bench-model", provider=provider, base_url=url, api_key="bench-key")


async def _raw_call(vendor: str, base: str, stream: bool) -> tuple[Call, Callable[[], Any]]:
    """Anthropic or Gemini spoken directly: aiohttp, bounded reads, orjson, SDK types."""
    import aiohttp  # noqa: PLC0415

    from server.config import UpstreamLimits  # noqa: PLC0415
    from server.pipeline.request import ChatRequest  # noqa: PLC0415
    from server.providers.bounded import line_batches, read_body  # noqa: PLC0415

    limits = UpstreamLimits()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    request = ChatRequest.from_body(orjson.loads(request_body(stream)))
    root = base.removesuffix("/v1")
    if vendor == "anthropic":
        from server.providers import anthropic_answer as aa  # noqa: PLC0415
        from server.providers import anthropic_translate as at  # noqa: PLC0415

        url = root + "/v1/messages"
        params = at.build_params(request, _config(vendor, base))
        headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}

        async def call() -> int:
            body = orjson.dumps({**params, "stream": True} if stream else params)
            async with session.post(url, data=body, headers=headers) as response:
                if not stream:
                    data = orjson.loads(await read_body(response, limits.max_body_bytes))
                    aa.to_completion(data, "m")
                    return 0
                translator, frames = aa.StreamTranslator("m"), 0
                async for batch in line_batches(response, limits.max_line_bytes):
                    for line in batch:
                        if line.startswith(b"data:"):
                            event = orjson.loads(line[5:])
                            frames += len(list(translator.feed(event)))
                return frames

    else:
        from server.providers import gemini_answer as ga  # noqa: PLC0415
        from server.providers import gemini_translate as gt  # noqa: PLC0415

        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{root}/v1beta/models/bench-model:{method}"
        from server.providers.images import ImageFetcher  # noqa: PLC0415

        payload = await gt.build_request(request, ImageFetcher(None))
        headers = {"x-goog-api-key": "bench-key", "Content-Type": "application/json"}

        async def call() -> int:
            async with session.post(url, data=orjson.dumps(payload), headers=headers) as response:
                if not stream:
                    data = orjson.loads(await read_body(response, limits.max_body_bytes))
                    ga.to_completion(data, "m")
                    return 0
                translator, frames = ga.StreamTranslator("m"), 0
                async for batch in line_batches(response, limits.max_line_bytes):
                    for line in batch:
                        if line.startswith(b"data:"):
                            frames += len(list(translator.feed(orjson.loads(line[5:]))))
                return frames + len(list(translator.finish()))

    return call, session.close


async def _provider_call(
    vendor: str, variant: str, base: str, stream: bool
) -> tuple[Call, Callable[[], Any]]:
    import aiohttp  # noqa: PLC0415

    from server.pipeline.request import ChatRequest  # noqa: PLC0415
    from server.providers import Clients, build_provider  # noqa: PLC0415
    from server.providers.cloud import CloudClients  # noqa: PLC0415

    config = _config(vendor, base)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    if variant == "raw":  # only for OpenAI's wire format: the openai_compatible provider
        config = config.model_copy(update={"provider": "openai_compatible"})
    cloud = CloudClients(sdk_pool="httpx2" if variant == "httpx2" else "aiohttp")
    provider = build_provider(config, Clients(aiohttp=session, cloud=cloud))
    request = ChatRequest.from_body(orjson.loads(request_body(stream)))

    async def call() -> int:
        if not stream:
            await provider.complete(request)
            return 0
        frames = 0
        async with provider.stream(request) as chunks:
            async for chunk in chunks:
                chunk.encode()  # what the gateway does with each chunk
                frames += 1
        return frames

    async def close() -> None:
        await cloud.aclose()
        await session.close()

    return call, close


async def work(
    vendor: str, variant: str, base: str, *, stream: bool, concurrency: int, duration: float
) -> dict[str, Any]:
    if variant == "raw" and vendor != "openai":
        call, close = await _raw_call(vendor, base, stream)
    else:
        call, close = await _provider_call(vendor, variant, base, stream)
    await call()  # one call outside the clock: imports, first connection
    done = frames = 0
    start = time.perf_counter()
    measure_from, deadline = start + 1.0, start + 1.0 + duration
    cpu_at: list[float] = []

    async def worker() -> None:
        nonlocal done, frames
        while (sent := time.perf_counter()) < deadline:
            if sent >= measure_from and not cpu_at:
                cpu_at.append(time.process_time())
            got = await call()
            if sent >= measure_from and time.perf_counter() <= deadline:
                done += 1
                frames += got

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu_at[0]
    await close()
    return {
        "requests": done,
        "rps": done / duration,
        "frames": frames,
        "cpu_us_per_request": cpu / done * 1e6 if done else float("nan"),
    }


def worker_main(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    coro = work(
        args.vendor,
        args.worker,
        args.url,
        stream=args.stream,
        concurrency=args.concurrency,
        duration=args.duration,
    )
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


# -- the driver ------------------------------------------------------------------------------


def run_worker(
    vendor: str, variant: str, url: str, stream: bool, args: argparse.Namespace
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", variant, "--vendor", vendor, "--url", url]
    argv += ["-c", str(args.concurrency), "--duration", str(args.duration)]
    if stream:
        argv.append("--stream")
    if args.pin:
        argv += ["--cpu", "0"]
    done = subprocess.run(
        argv, capture_output=True, check=False, timeout=args.duration + 120, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{vendor}/{variant} worker failed: {done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=32, help="content chunks per stream")
    parser.add_argument("--vendors", default=",".join(VENDORS))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", type=Path)
    # Worker mode (internal): run one provider variant and print its result.
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--vendor", choices=VENDORS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    vendors = [v.strip() for v in args.vendors.split(",") if v.strip()]
    where = workdir()
    load_before = os.getloadavg()[0]
    mock, base = start_mock(where, 1 if args.pin else None, args.chunks, 0.0)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for rep in range(args.repeat):
            for vendor in vendors:
                for stream in (False, True):
                    for variant in VARIANTS:
                        key = f"{vendor} {'stream' if stream else 'whole'} {variant}"
                        r = run_worker(vendor, variant, base, stream, args)
                        # A run that finished nothing (the shared machine stalled) has no CPU
                        # per request; orjson wrote its NaN as null.
                        r["cpu_us_per_request"] = r["cpu_us_per_request"] or float("nan")
                        results.setdefault(key, []).append(r)
                        print(
                            f"  [{rep + 1}/{args.repeat}] {key:<28} {r['rps']:>7.0f}/s  "
                            f"cpu {r['cpu_us_per_request']:>6.0f} us  load "
                            f"{os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
    finally:
        mock.stop()
        shutil.rmtree(where, ignore_errors=True)

    print()
    print(
        f"Vendor provider transports: c={args.concurrency}, {args.repeat} repeats x "
        f"{args.duration:g} s, medians; load average {load_before:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    print(
        f"{'provider':<10} {'answer':<7} {'variant':<8} {'per s':>7} {'CPU us':>7} {'vs httpx2':>9}"
    )
    for key, runs in results.items():
        vendor, answer, variant = key.split()
        cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
        old = statistics.median(
            r["cpu_us_per_request"] for r in results[f"{vendor} {answer} httpx2"]
        )
        rps = statistics.median(r["rps"] for r in runs)
        print(f"{vendor:<10} {answer:<7} {variant:<8} {rps:>7.0f} {cpu:>7.0f} {old / cpu:>8.2f}x")
    if args.json:
        args.json.write_bytes(orjson.dumps({"args": vars(args), "results": results}, default=str))


if __name__ == "__main__":
    main()
