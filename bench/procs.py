"""Child processes for the benchmarks: the mock upstream, Puente, and runs of the load generator.

Each runs in its own process (its own event loop and GIL), optionally pinned to one CPU, and is
stopped by its own pid when the benchmark ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (from /proc, 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()}")


class Child:
    """One long-running child process with its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], workdir: Path, cpu: int | None, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        pin(self.proc.pid, cpu)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_mock(
    workdir: Path,
    cpu: int | None,
    chunks: int,
    interval_ms: float,
    tokens: int = 16,
    *,
    name: str = "mock",
) -> tuple[Child, str]:
    """The mock upstream; returns it and its base URL (``…/v1``)."""
    port = free_port()
    child = Child(
        name,
        [
            sys.executable,
            str(BENCH / "mock_upstream.py"),
            "--port",
            str(port),
            "--chunks",
            str(chunks),
            "--interval-ms",
            str(interval_ms),
            "--tokens",
            str(tokens),
        ],
        workdir,
        cpu,
    )
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log)
    return child, f"http://127.0.0.1:{port}/v1"


def start_puente(
    workdir: Path,
    cpu: int | None,
    upstream: str,
    model: str,
    *,
    models: list[dict[str, Any]] | None = None,
    tree: Path | None = None,
    name: str = "puente",
) -> tuple[Child, str]:
    """A real ``python -m server serve`` (one uvicorn worker, as in production) in front of
    ``upstream`` (or with the model entries ``models``), run from this checkout or from
    ``tree`` (another checkout with its own ``.venv``: a "before"); returns it and its base URL
    (``…/v1``)."""
    port = free_port()
    config = workdir / f"{name}.yaml"
    entries = models or [{"name": model, "provider": "openai_compatible", "base_url": upstream}]
    config.write_text(yaml.safe_dump({"models": entries}))
    python = str(tree / ".venv" / "bin" / "python") if tree else sys.executable
    argv = [python, "-m", "server", "serve", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    child = Child(name, argv, workdir, cpu, cwd=tree or ROOT)
    # The vendor SDKs take seconds to import, more on a busy machine.
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log, timeout=300)
    return child, f"http://127.0.0.1:{port}/v1"


def start_relay(workdir: Path, cpu: int | None, upstreams: dict[str, str]) -> tuple[Child, str]:
    """The bare aiohttp relay (bench/relay.py); returns it and its root URL: a client posts to
    ``ROOT/<name>/v1/chat/completions``."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "relay.py"), "--port", str(port)]
    for name, url in upstreams.items():
        argv += ["--upstream", f"{name}={url}"]
    child = Child("relay", argv, workdir, cpu)
    wait_healthy(f"http://127.0.0.1:{port}/health", child.proc, child.log)
    return child, f"http://127.0.0.1:{port}"


def loadgen(
    url: str,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    stream: bool,
    cpu: int | None,
    model: str,
) -> dict[str, Any]:
    """One run of bench/loadgen.py in its own process; its JSON result."""
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--model", model]
    argv += ["-c", str(concurrency), "-d", str(duration), "--warmup", str(warmup)]
    if stream:
        argv.append("--stream")
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    done = subprocess.run(
        argv, capture_output=True, check=False, timeout=duration + warmup + 90, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="puente-bench-"))
