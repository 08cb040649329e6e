"""What Puente adds: the same load sent straight to a fast mock upstream and through Puente.

``--every-kind`` (issue 16) measures, in one run, the mock directly, a bare aiohttp relay and
Puente on each provider kind, each in front of a mock of its vendor's wire format; the targets
and the table are in ``bench/gateway_kinds.py``:

    .venv/bin/python bench/bench_gateway.py --every-kind --repeat 1 --duration 2    # short
    .venv/bin/python bench/bench_gateway.py --every-kind --before /work/base  # + another tree

Without it, the scenarios of issue 2, OpenAI-compatible only: one run starts the mock
(bench/mock_upstream.py) and a real ``python -m server serve`` (one uvicorn worker, as in
production) with a generated config, then for each scenario runs the load generator
(bench/loadgen.py, its own process) against the mock and against Puente, alternating,
``--repeat`` times, and prints medians:

- non-streaming, c=1: latency p50/p99, direct and through Puente, and what Puente adds;
- non-streaming, c=32: requests/s;
- streaming, c=1: time to first token p50/p99 and what Puente adds;
- streaming, c=32: SSE frames/s (and streams/s).

The machine has 2 cores shared by the mock, Puente and the load generator. By default Puente
(single-threaded, like any one-worker uvicorn) is pinned to CPU 0 and the mock and the load
generator share CPU 1, so Puente gets one whole core and the two fast helpers do not steal from
it; ``--no-pin`` lets the kernel place all three.

    .venv/bin/python bench/bench_gateway.py                 # ~2 minutes
    .venv/bin/python bench/bench_gateway.py --repeat 5 --json results.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as ``python bench/bench_gateway.py``: its own folder is on sys.path.
import gateway_kinds
import httpx
import orjson
from gateway_kinds import KINDS
from loadgen import request_body
from procs import Child, loadgen, start_mock, start_puente, workdir

MODEL = "bench-model"
# Targets from issue 2, for a 2-core machine.
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_RPS_C32 = 1000.0


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    concurrency: int


SCENARIOS = (
    Scenario("non-streaming c=1", stream=False, concurrency=1),
    Scenario("non-streaming c=32", stream=False, concurrency=32),
    Scenario("streaming c=1", stream=True, concurrency=1),
    Scenario("streaming c=32", stream=True, concurrency=32),
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def overhead_from_metrics(base: str) -> tuple[float, int]:
    """Sum and count of ``puente_gateway_overhead_seconds`` (Puente's own view of its cost)."""
    text = httpx.get(base.removesuffix("/v1") + "/metrics", timeout=5).text
    total, count = 0.0, 0
    for line in text.splitlines():
        if line.startswith("puente_gateway_overhead_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("puente_gateway_overhead_seconds_count"):
            count += int(float(line.rsplit(" ", 1)[1]))
    return total, count


def sanity_check(direct: str, puente: str) -> None:
    """Both answer the same thing before anything is timed."""
    for base in (direct, puente):
        url = base + "/chat/completions"
        r = httpx.post(url, content=request_body(False, MODEL), timeout=5)
        if r.status_code != 200 or not r.json().get("choices"):
            raise RuntimeError(f"{base}: {r.status_code} {r.text[:500]}")
        r = httpx.post(url, content=request_body(True, MODEL), timeout=5)
        if r.status_code != 200 or not r.text.endswith("data: [DONE]\n\n"):
            raise RuntimeError(f"{base}: {r.status_code} {r.text[-500:]}")


def wrk_rps(url: str, concurrency: int, duration: float, cpu: int | None, where: Path) -> float:
    """Requests/s from ``wrk`` (C, one thread) as a cross-check of the Python load generator."""
    script = where / "post.lua"
    body = request_body(False, MODEL).decode().replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        "wrk.headers['Authorization'] = 'Bearer bench'\n"
    )
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "-s", str(script), url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 30)
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk printed no Requests/sec:\n{out.stdout}\n{out.stderr}")


def top_functions(raw: Path, count: int = 15) -> list[str]:
    """Self time per function from py-spy's collapsed stacks (``-f raw``)."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        # "func (path/to/file.py:123)" -> "func (file.py)"
        name, _, where = leaf.partition(" (")
        name = name.strip() or "(no Python frame)"
        own[f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})"] += int(samples)
        total += int(samples)
    return [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(count)]


def profile(
    puente: Child, base: str, stream: bool, cpu: int | None, args: argparse.Namespace
) -> None:
    """py-spy on Puente under the c=32 load: a flame graph and the top functions by self time."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    kind = "streaming" if stream else "non-streaming"
    args.profile.mkdir(parents=True, exist_ok=True)
    outputs = []
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
        out = args.profile / f"puente-{kind}.{suffix}"
        recorder = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(puente.pid),
                "-r",
                "250",
                "--gil",  # only the thread running Python: where the one core goes
                "-d",
                str(int(args.duration)),
                "-f",
                fmt,
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        loadgen(
            base + "/chat/completions",
            concurrency=32,
            duration=args.duration,
            warmup=0.5,
            stream=stream,
            cpu=cpu,
            model=MODEL,
        )
        _, err = recorder.communicate(timeout=60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed (pip install py-spy): {err.decode()[-500:]}")
        outputs.append(out)
    print(f"\nprofile, {kind} c=32: {outputs[0]}; top functions by self time:")
    for line in top_functions(outputs[1]):
        print("  " + line)


def run(args: argparse.Namespace) -> dict[str, Any]:
    where = workdir()
    gen_cpu = mock_cpu = puente_cpu = None
    if args.pin:
        puente_cpu, mock_cpu, gen_cpu = 0, 1, 1
    children: list[Child] = []
    try:
        mock, direct = start_mock(where, mock_cpu, args.chunks, args.interval_ms)
        children.append(mock)
        puente, through = start_puente(where, puente_cpu, direct, MODEL)
        children.append(puente)
        sanity_check(direct, through)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            s.name: {"direct": [], "puente": []} for s in SCENARIOS
        }
        for rep in range(args.repeat):
            for scenario in SCENARIOS:
                for target, base in (("direct", direct), ("puente", through)):
                    cpu_before = puente.cpu()
                    oh_before = overhead_from_metrics(through)
                    result = loadgen(
                        base + "/chat/completions",
                        concurrency=scenario.concurrency,
                        duration=args.duration,
                        warmup=args.warmup,
                        stream=scenario.stream,
                        cpu=gen_cpu,
                        model=MODEL,
                    )
                    if result["errors"]:
                        raise RuntimeError(f"{scenario.name} {target}: {result['first_error']}")
                    if target == "puente":
                        oh_after = overhead_from_metrics(through)
                        done = oh_after[1] - oh_before[1]
                        result["puente_cpu_us_per_request"] = (
                            (puente.cpu() - cpu_before) / done * 1e6 if done else float("nan")
                        )
                        result["puente_overhead_ms_mean"] = (
                            (oh_after[0] - oh_before[0]) / done * 1000 if done else float("nan")
                        )
                    results[scenario.name][target].append(result)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {scenario.name:<20} {target:<6} "
                        f"{result['rps']:>9.0f} req/s  p50 {result['latency_ms']['p50']:.3f} ms  "
                        f"ttft p50 {result['ttft_ms']['p50']:.3f} ms",
                        flush=True,
                    )
        wrk: dict[str, float] = {}
        if args.wrk and shutil.which("wrk"):
            for target, base in (("direct", direct), ("puente", through)):
                wrk[target] = wrk_rps(base + "/chat/completions", 32, args.duration, gen_cpu, where)
        if args.profile:
            for stream in (False, True):
                profile(puente, through, stream, gen_cpu, args)
        return {"results": results, "wrk": wrk}
    finally:
        for child in reversed(children):
            child.stop()
        if not args.keep:
            shutil.rmtree(where, ignore_errors=True)
        else:
            print(f"logs kept in {where}")


def summarize(data: dict[str, Any], args: argparse.Namespace) -> str:
    res = data["results"]

    def med(name: str, target: str, pick: Callable[[dict[str, Any]], float]) -> float:
        return median([pick(r) for r in res[name][target]])

    def added(name: str, key: str, q: str) -> float:
        # Median over repeats of (Puente's percentile - direct's percentile), each pair measured
        # back to back.
        pairs = zip(res[name]["direct"], res[name]["puente"], strict=True)
        return median([p[key][q] - d[key][q] for d, p in pairs])

    def ok(good: bool) -> str:
        return "met" if good else "MISSED"

    lines = []
    lines.append(
        f"Puente gateway benchmark: {os.cpu_count()} CPUs, "
        f"{'Puente on CPU 0, mock + load generator on CPU 1' if args.pin else 'unpinned'}, "
        f"{args.repeat} repeats x {args.duration:g} s (+{args.warmup:g} s warm-up), "
        f"stream = {args.chunks} content chunks, pacing {args.interval_ms:g} ms; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    lines.append("medians over repeats; 'added' = Puente minus direct, per repeat")
    lines.append("")

    n1 = "non-streaming c=1"
    d50, p50 = (med(n1, t, lambda r: r["latency_ms"]["p50"]) for t in ("direct", "puente"))
    d99, p99 = (med(n1, t, lambda r: r["latency_ms"]["p99"]) for t in ("direct", "puente"))
    a50, a99 = added(n1, "latency_ms", "p50"), added(n1, "latency_ms", "p99")
    lines.append(f"{n1}: latency direct p50 {d50:.3f} ms p99 {d99:.3f} ms")
    lines.append(f"{'':>19}  through Puente p50 {p50:.3f} ms p99 {p99:.3f} ms")
    lines.append(
        f"{'':>19}  ADDED p50 {a50:.3f} ms (target <= {TARGET_ADDED_P50_MS:g}: "
        f"{ok(a50 <= TARGET_ADDED_P50_MS)})  p99 {a99:.3f} ms (target <= "
        f"{TARGET_ADDED_P99_MS:g}: {ok(a99 <= TARGET_ADDED_P99_MS)})"
    )
    cpu1 = med(n1, "puente", lambda r: r["puente_cpu_us_per_request"])
    oh1 = med(n1, "puente", lambda r: r["puente_overhead_ms_mean"])
    lines.append(
        f"{'':>19}  Puente CPU {cpu1:.0f} us/request; its own overhead metric {oh1:.3f} ms mean"
    )

    n32 = "non-streaming c=32"
    drps, prps = (med(n32, t, lambda r: r["rps"]) for t in ("direct", "puente"))
    lines.append(
        f"{n32}: direct {drps:,.0f} req/s, through Puente {prps:,.0f} req/s "
        f"({prps / drps:.1%} of direct; target >= {TARGET_RPS_C32:,.0f}: "
        f"{ok(prps >= TARGET_RPS_C32)})"
    )
    pl50 = med(n32, "puente", lambda r: r["latency_ms"]["p50"])
    pl99 = med(n32, "puente", lambda r: r["latency_ms"]["p99"])
    cpu32 = med(n32, "puente", lambda r: r["puente_cpu_us_per_request"])
    lines.append(
        f"{'':>20}  through Puente latency p50 {pl50:.2f} ms p99 {pl99:.2f} ms; "
        f"Puente CPU {cpu32:.0f} us/request (= {1e6 / cpu32:,.0f} req/s on a whole core)"
    )
    if data["wrk"]:
        w = data["wrk"]
        lines.append(
            f"{'':>20}  wrk cross-check (1 run): direct {w['direct']:,.0f} req/s, "
            f"Puente {w['puente']:,.0f} req/s"
        )

    s1 = "streaming c=1"
    d50, p50 = (med(s1, t, lambda r: r["ttft_ms"]["p50"]) for t in ("direct", "puente"))
    d99, p99 = (med(s1, t, lambda r: r["ttft_ms"]["p99"]) for t in ("direct", "puente"))
    a50, a99 = added(s1, "ttft_ms", "p50"), added(s1, "ttft_ms", "p99")
    lines.append(f"{s1}: time to first token direct p50 {d50:.3f} ms p99 {d99:.3f} ms")
    lines.append(f"{'':>13}  through Puente p50 {p50:.3f} ms p99 {p99:.3f} ms")
    lines.append(f"{'':>13}  ADDED p50 {a50:.3f} ms  p99 {a99:.3f} ms")
    whole = med(s1, "puente", lambda r: r["latency_ms"]["p50"]) - med(
        s1, "direct", lambda r: r["latency_ms"]["p50"]
    )
    lines.append(f"{'':>13}  whole stream added p50 {whole:.3f} ms")

    s32 = "streaming c=32"
    dfps, pfps = (med(s32, t, lambda r: r["frames_per_s"]) for t in ("direct", "puente"))
    dsps, psps = (med(s32, t, lambda r: r["rps"]) for t in ("direct", "puente"))
    lines.append(
        f"{s32}: frames/s direct {dfps:,.0f}, through Puente {pfps:,.0f} "
        f"({pfps / dfps:.1%}); streams/s {dsps:,.0f} vs {psps:,.0f}"
    )
    pt50 = med(s32, "puente", lambda r: r["ttft_ms"]["p50"])
    pt99 = med(s32, "puente", lambda r: r["ttft_ms"]["p99"])
    cpus = med(s32, "puente", lambda r: r["puente_cpu_us_per_request"])
    lines.append(
        f"{'':>16}  through Puente ttft p50 {pt50:.2f} ms p99 {pt99:.2f} ms; "
        f"Puente CPU {cpus:.0f} us/stream ({cpus / (args.chunks + 3):.1f} us/frame)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=32, help="content chunks per stream")
    parser.add_argument("--interval-ms", type=float, default=0.0, help="mock's pacing per chunk")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="skip the wrk check")
    parser.add_argument("--json", type=Path, help="also write every run's raw result here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and config")
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the runs, py-spy Puente under c=32 load into this folder",
    )
    parser.add_argument(
        "--every-kind", action="store_true", help="issue 16: relay and every provider kind"
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="with --every-kind: the kinds (default: all)"
    )
    parser.add_argument(
        "--before", type=Path, help="also run Puente from this checkout (with its own .venv)"
    )
    parser.add_argument(
        "--paced-ms", type=float, default=20.0, help="pacing of the mock for the 64 streams"
    )
    args = parser.parse_args()
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    started = time.monotonic()
    if args.every_kind:
        data = gateway_kinds.run(args)
        report = gateway_kinds.summarize(data, args)
    else:
        data = run(args)
        report = summarize(data, args)
    print()
    print(report)
    took, load = time.monotonic() - started, os.getloadavg()[0]
    print(f"\n(took {took:.0f} s; load average now {load:.2f})")
    if args.json:
        args.json.write_bytes(orjson.dumps({"args": vars(args), **data}, default=str))


if __name__ == "__main__":
    main()
