"""Trees of Puente side by side, keys and limits on: what the hot path costs in each.

One run starts the fast mock upstream (bench/mock_upstream.py) and one ``python -m server serve``
from each tree (``--base``, a checkout with its own ``.venv``, and ``--this``: this checkout, or
several trees, t1, t2 …, e.g. one per step of a change), all on
SQLite with the key ``bench`` (requests/min, tokens/min and daily budget set too high to refuse,
as in bench/bench_auth.py). The load generator goes through the trees in turn, the first one
changing each round, for each scenario; Puente's CPU per request comes from /proc.

    .venv/bin/python bench/bench_hotpath.py --base /work/base --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_auth import MODEL, bench_key
from procs import ROOT, Child, cpu_seconds, free_port, loadgen, pin, start_mock, wait_healthy

SCENARIOS = (
    ("non-streaming c=32", False, 32),
    ("streaming c=32", True, 32),
    ("non-streaming c=1", False, 1),
)

_STORE_KEY = """
import asyncio, sys
from server.access.keys import ApiKey, Limits
from server.access.storage import SQLiteStore
from pathlib import Path
async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await store.migrate()
    await store.create_key(ApiKey(**__KEY__))
    await store.aclose()
asyncio.run(main())
"""


def answered(base: str) -> int:
    """Chat requests the Puente at ``base`` has answered so far (``puente_requests_total``)."""
    text = httpx.get(base.removesuffix("/v1") + "/metrics", timeout=60).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("puente_requests_total{")
        )
    )


class Tree:
    """One checkout's Puente: its own interpreter, its own working directory."""

    def __init__(
        self, name: str, root: Path, where: Path, upstream: str, cpu: int | None, *, nice: int
    ):
        self.name = name
        folder = where / name
        folder.mkdir()
        python = str(root / ".venv" / "bin" / "python")
        key = bench_key()
        fields = {
            "id": key.id,
            "name": key.name,
            "key_hash": key.key_hash,
            "hint": key.hint,
            "models": key.models,
            "created_at": key.created_at,
        }
        limits = key.limits
        script = _STORE_KEY.replace(
            "__KEY__",
            f"dict({', '.join(f'{k}={v!r}' for k, v in fields.items())}, limits=Limits("
            f"rpm={limits.rpm}, tpm={limits.tpm}, budget_day={limits.budget_day}, "
            f"budget_month={limits.budget_month}))",
        )
        subprocess.run([python, "-c", script, str(folder / "puente.db")], cwd=root, check=True)
        config = {
            "models": [{"name": MODEL, "provider": "openai_compatible", "base_url": upstream}]
        }
        (folder / "puente.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [python, "-m", "server", "serve", "--config", str(folder / "puente.yaml")]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if k != "PUENTE_ADMIN_KEY"}
        self.log = where / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env
            )
        pin(self.proc.pid, cpu)
        if nice:
            # Other work on a shared machine takes its turns on CPU 0 whatever this does; a
            # higher priority for both trees keeps how often each sleeps from deciding its share.
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, nice)
        try:  # a busy machine can take a while to start Puente
            wait_healthy(f"http://127.0.0.1:{port}/health", self.proc, self.log, timeout=180)
        except BaseException:
            self.stop()
            raise
        self.base = f"http://127.0.0.1:{port}/v1"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        Child.stop(self)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="puente-bench-hot-"))
    puente_cpu, helper_cpu = (0, 1) if args.pin else (None, None)
    loads = [os.getloadavg()[0]]
    trees: list[Tree] = []
    mock = None
    try:
        mock, upstream = start_mock(where, helper_cpu, args.chunks, 0.0)
        trees = [Tree("base", Path(args.base), where, upstream, puente_cpu, nice=args.nice)]
        for i, other in enumerate(args.this):
            name = "this" if len(args.this) == 1 else f"t{i + 1}"
            trees.append(Tree(name, Path(other), where, upstream, puente_cpu, nice=args.nice))
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {t.name: [] for t in trees} for name, _, _ in SCENARIOS
        }
        for rep in range(args.repeat):
            for name, stream, concurrency in SCENARIOS:
                if args.only and args.only not in name:
                    continue
                # The first tree changes every round, so a drift in the load favours none.
                shift = rep % len(trees)
                for tree in trees[shift:] + trees[:shift]:
                    for _attempt in range(3):  # a run the machine starved completely is rerun
                        before, done_before = tree.cpu(), answered(tree.base)
                        result = loadgen(
                            tree.base + "/chat/completions",
                            concurrency=concurrency,
                            duration=args.duration,
                            warmup=args.warmup,
                            stream=stream,
                            cpu=helper_cpu,
                            model=MODEL,
                        )
                        if result["requests"]:
                            break
                    if result["errors"]:
                        raise RuntimeError(f"{name} {tree.name}: {result['first_error']}")
                    done = answered(tree.base) - done_before
                    result["cpu_us"] = (tree.cpu() - before) / max(done, 1) * 1e6
                    results[name][tree.name].append(result)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {name:<19} {tree.name:<4} "
                        f"{result['rps']:>8.0f} req/s  p50 {result['latency_ms']['p50']:.3f} ms"
                        f"  ttft p50 {result['ttft_ms']['p50']:.3f} ms"
                        f"  cpu {result['cpu_us']:.0f} us/req",
                        flush=True,
                    )
            loads.append(os.getloadavg()[0])
        return {"results": results, "loads": loads, "trees": [t.name for t in trees]}
    finally:
        for tree in trees:
            tree.stop()
        if mock is not None:
            mock.stop()
        if args.keep:
            print(f"logs kept in {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)


def summarize(data: dict[str, Any]) -> str:
    res = data["results"]
    lines = [
        f"load average {min(data['loads']):.2f}-{max(data['loads']):.2f}; medians over repeats",
        "".join([f"{'':<44}", *(f"{name:>10}" for name in data["trees"])]),
    ]
    for name, _, _ in SCENARIOS:
        if not res[name]["base"]:
            continue
        for label, metric, q, fmt in (
            ("CPU us/request", "cpu_us", None, ".0f"),
            ("req/s", "rps", None, ".0f"),
            ("latency p50 ms", "latency_ms", "p50", ".3f"),
            ("ttft p50 ms", "ttft_ms", "p50", ".3f"),
        ):
            cells = []
            for tree in data["trees"]:
                values = [r[metric][q] if q else r[metric] for r in res[name][tree]]
                cells.append(f"{statistics.median(values):>10{fmt}}")
            lines.append(f"{name + ': ' + label:<44}{''.join(cells)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the other checkout (with its .venv)")
    parser.add_argument(
        "--this", nargs="+", default=[str(ROOT)], help="the trees measured (default: here)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--nice", type=int, default=0, help="priority of both (-10: higher)")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(summarize(run(args)))


if __name__ == "__main__":
    main()
