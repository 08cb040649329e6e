"""Soak: a bounded run of mixed traffic through Puente, watching its memory and descriptors.

Puente (a real ``python -m server serve``) sits in front of the faulty fake upstream from
``tests/fakes/faults.py`` (in its own process) and gets, from a few concurrent clients:

    streams answered whole          35%      a 503 retried, then answered      10%
    whole answers                   25%      a primary failing over to its fallback 10%
    clients leaving mid-stream       8%      client errors (400) passed through 5%
    a hanging upstream (timeout)      4%      a stream cut off mid-way (reset)    3%

Every ``--interval`` seconds it records Puente's RSS and open descriptors and prints them. After
``--warmup`` minutes the traffic pauses until Puente is quiet and the baseline is taken; at the end
it pauses again and takes the final figures. It prints RSS growth per minute after warm-up (a
least-squares slope over the samples) and descriptors at the end against the start.

    .venv/bin/python bench/soak.py --minutes 10        # the default
    .venv/bin/python bench/soak.py --minutes 3 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from procs import Child, free_port, wait_healthy  # noqa: E402

from tests.fakes.faults import FaultyOpenAI  # noqa: E402

MESSAGES = [{"role": "user", "content": "hola"}]
REPLY = "una respuesta de prueba con algunas palabras más para que dure un poco"

# (weight, kind): what each request of the mix does.
MIX = [
    (35, "stream"),
    (25, "whole"),
    (10, "retried"),
    (10, "fallback"),
    (8, "leave"),
    (5, "client_error"),
    (4, "hang"),
    (3, "reset"),
]


# -- the upstream, in its own process ------------------------------------------------------------


def serve_upstream(port_file: Path) -> None:
    fake = FaultyOpenAI().start()
    port_file.write_text(str(fake.port))
    stop = threading.Event()
    while not stop.wait(10):
        fake.reset()  # its records are for tests; a soak would only grow them


def start_upstream(workdir: Path) -> tuple[Child, str]:
    port_file = workdir / "upstream.port"
    child = Child(
        "upstream",
        [sys.executable, str(BENCH / "soak.py"), "--upstream", str(port_file)],
        workdir,
        None,
    )
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise RuntimeError(f"the fake upstream did not start:\n{child.log.read_text()}")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port_file.read_text()}/v1"
    wait_healthy(base + "/models", child.proc, child.log)
    return child, base


def start_puente(workdir: Path, upstream: str) -> tuple[Child, str]:
    def model(name: str, **settings: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai_compatible",
            "base_url": upstream,
            "model": f"{name}-up",
            "backoff": {"base": 0.02, "max": 1.0},
            **settings,
        }

    config = {
        "models": [
            model("soak", max_concurrency=64, max_queue=64),
            model("soak-primary", retries=1, fallbacks=["soak"]),
            model("soak-hang", retries=0, timeouts={"connect": 2, "read": 0.5}),
        ]
    }
    path = workdir / "puente.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [sys.executable, "-m", "server", "serve", "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    child = Child("puente", argv, workdir, None)
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log)
    return child, f"http://127.0.0.1:{port}"


# -- measuring Puente from outside ---------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    return float(statistics.linear_regression(xs, ys).slope) * 60


# -- the traffic ---------------------------------------------------------------------------------


class Traffic:
    def __init__(self, base_url: str, concurrency: int, seed: int) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.rng = random.Random(seed)  # a reproducible mix
        self.outcomes: Counter[str] = Counter()

    def _pick(self) -> str:
        total = sum(w for w, _ in MIX)
        roll = self.rng.uniform(0, total)
        for weight, kind in MIX:
            roll -= weight
            if roll <= 0:
                return kind
        return MIX[-1][1]

    def _body(self, kind: str) -> dict[str, Any]:
        fake: dict[str, Any] = {"reply": REPLY, "delay": 0.005}
        body: dict[str, Any] = {"model": "soak", "messages": MESSAGES, "stream": True}
        if kind == "whole":
            body["stream"] = False
        elif kind == "retried":
            fake |= {"tag": uuid.uuid4().hex, "status": 503, "fail_first": 1}
            body["stream"] = self.rng.random() < 0.5
        elif kind == "fallback":
            body["model"] = "soak-primary"
            fake |= {"status": 503, "only_model": "soak-primary-up"}
        elif kind == "client_error":
            fake |= {"status": 400}
        elif kind == "hang":
            body["model"] = "soak-hang"
            fake |= {"hang": 5}
        elif kind == "reset":
            fake |= {"reset_after": 3}
        return {**body, "fake": fake}

    async def _one(self, client: httpx.AsyncClient) -> None:
        kind = self._pick()
        body = self._body(kind)
        try:
            if body["stream"]:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_bytes():
                        if kind == "leave":
                            break  # leaving closes the connection with the body unread
                    status = response.status_code
            else:
                status = (await client.post("/v1/chat/completions", json=body)).status_code
        except httpx.HTTPError as exc:
            self.outcomes[f"{kind}:{type(exc).__name__}"] += 1
            return
        self.outcomes[f"{kind}:{status}"] += 1

    async def _worker(self, until: float) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            while time.monotonic() < until:
                await self._one(client)

    def start(self, until: float) -> asyncio.Future[list[None]]:
        """Clients sending until ``until``; each closes its connections when it stops."""
        return asyncio.gather(*(self._worker(until) for _ in range(self.concurrency)))


async def quiet(base_url: str, pid: int, timeout: float = 20) -> int:
    """Wait until Puente has nothing in flight and its descriptor count is steady; return it."""
    deadline = time.monotonic() + timeout
    last, steady = -1, 0
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            busy = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("puente_requests_in_flight{")
            )
            fds = open_fds(pid)
            steady = steady + 1 if busy == 0 and fds == last else 0
            if steady >= 5:
                return fds
            last = fds
            await asyncio.sleep(0.2)
    return open_fds(pid)


async def soak(args: argparse.Namespace, base_url: str, pid: int) -> dict[str, Any]:
    traffic = Traffic(base_url, args.concurrency, args.seed)
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    warm_end = started + min(args.warmup * 60, args.minutes * 60 / 2)
    fds_idle = open_fds(pid)

    def sample() -> None:
        at = time.monotonic() - started
        rss, fds = rss_mib(pid), open_fds(pid)
        samples.append((at, rss, fds))
        done = sum(traffic.outcomes.values())
        print(f"t={at:6.0f}s rss={rss:7.2f} MiB fds={fds:4d} requests={done}", flush=True)

    async def phase(until: float) -> None:
        clients = traffic.start(until)
        sample()
        while time.monotonic() < until:
            await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
            sample()
        await clients

    await phase(warm_end)
    fds_start = await quiet(base_url, pid)
    rss_start = rss_mib(pid)
    print(f"-- warmed up: rss={rss_start:.2f} MiB, fds at rest={fds_start}", flush=True)
    measured_from = time.monotonic() - started
    await phase(end)
    fds_end = await quiet(base_url, pid)
    rss_end = rss_mib(pid)
    after = [(t, rss) for t, rss, _ in samples if t >= measured_from]
    return {
        "minutes": args.minutes,
        "warmup_minutes": round(measured_from / 60, 2),
        "concurrency": args.concurrency,
        "requests": sum(traffic.outcomes.values()),
        "outcomes": dict(sorted(traffic.outcomes.items())),
        "rss_start_mib": round(rss_start, 2),
        "rss_end_mib": round(rss_end, 2),
        "rss_growth_mib_per_min": round(slope_per_minute(after), 3),
        "fds_before_traffic": fds_idle,
        "fds_start": fds_start,
        "fds_end": fds_end,
        "samples": [{"t": round(t), "rss_mib": round(r, 2), "fds": f} for t, r, f in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="minutes before measuring")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--upstream", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return 0

    with tempfile.TemporaryDirectory(prefix="puente-soak-") as tmp:
        workdir = Path(tmp)
        upstream, upstream_url = start_upstream(workdir)
        puente: Child | None = None
        try:
            puente, base_url = start_puente(workdir, upstream_url)
            result = asyncio.run(soak(args, base_url, puente.pid))
        finally:
            if puente is not None:
                puente.stop()
            upstream.stop()
        if puente is not None and "Traceback" in puente.log.read_text():
            print("!! Puente logged a traceback:\n" + puente.log.read_text()[-4000:])
            result["traceback_in_log"] = True
    print(orjson.dumps({k: v for k, v in result.items() if k != "samples"},
                       option=orjson.OPT_INDENT_2).decode())  # fmt: skip
    print(
        f"RSS growth after warm-up: {result['rss_growth_mib_per_min']:+.3f} MiB/min "
        f"({result['rss_start_mib']} -> {result['rss_end_mib']} MiB); open descriptors at rest: "
        f"{result['fds_start']} after warm-up, {result['fds_end']} at the end"
    )
    if args.json:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
