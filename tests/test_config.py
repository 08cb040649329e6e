"""A bad configuration fails start with one clear line; a good one is served as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError, load_config, parse_config


def _serve(
    config: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--config", str(config), "--port", "0", *extra],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models:\n  - name: a\n    provider: openai_compatible\n    base_url: http://x/v1\n"
            "  - name: claude\n    provider: clod\n",
            "models[1] (claude): field 'provider'",
        ),
        (
            "models:\n  - name: a\n    provider: vllm\n    base_url: ftp://x\n",
            "models[0] (a): field 'base_url'",
        ),
        (
            "models:\n  - name: a\n    provider: openai_compatible\n    timeouts: {read: -1}\n",
            "models[0] (a): field 'timeouts.read'",
        ),
        (
            "models:\n  - name: a\n    provider: openai_compatible\n    colour: blue\n",
            "models[0] (a): field 'colour'",
        ),
        (
            "models:\n  - name: a\n    provider: openai_compatible\n    base_url: http://x/v1\n"
            "  - name: a\n    provider: openai_compatible\n    base_url: http://x/v1\n",
            "used twice",
        ),
        (
            "models:\n  - name: a\n    provider: vllm\n",
            "models[0] (a): Value error, provider 'vllm' needs 'endpoints', 'base_url' or 'launch'",
        ),
        ("models: [\n", "line 2"),
    ],
)
def test_bad_file_fails_start_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = _serve(config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = _serve(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope.yaml" in result.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "env.yaml"
    config.write_text("models:\n  - name: a\n    provider: nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "check-config"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        env={**os.environ, "PUENTE_CONFIG": str(config)},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr


def test_environment_references_are_substituted() -> None:
    text = (
        "models:\n"
        "  - name: a\n    provider: openai_compatible\n    base_url: ${BASE:-http://h:1/v1}\n"
        "    api_key: ${A_KEY}\n"
        "  - name: b\n    provider: openai_compatible\n    base_url: http://h/v1\n"
        "    api_key: ${B_KEY}\n"
    )
    config = parse_config(text, "inline", {"A_KEY": "sk-a"})
    a, b = config.models
    assert (a.base_url, a.api_key, a.missing_env) == ("http://h:1/v1", "sk-a", None)
    assert (b.api_key, b.missing_env) == (None, "B_KEY")
    with pytest.raises(ConfigError, match=r"models\[0\].base_url.*NO_SUCH_VAR"):
        parse_config(
            "models:\n  - name: a\n    provider: vllm\n    base_url: ${NO_SUCH_VAR}\n", "inline", {}
        )


def test_shipped_configs_are_valid_and_mean_what_they_say() -> None:
    root = Path(__file__).resolve().parent.parent
    example = load_config(root / "examples" / "openai-compatible.yaml", {})
    assert example.models and all(m.provider == "openai_compatible" for m in example.models)
    # The Quickstart's file: the local model serves with no key set; cloud models wait for
    # theirs; every persona targets a configured model.
    shipped = load_config(root / "puente.yaml", {})
    local = [m for m in shipped.models if m.provider == "vllm"]
    assert local and all(m.launch is not None and m.missing_env is None for m in local)
    cloud = [m for m in shipped.models if m.provider in ("openai", "anthropic", "gemini")]
    assert cloud and all(m.missing_env for m in cloud)
    assert {p.name for p in shipped.personas} >= {"historia-peru", "experto-matematicas"}
    for persona in shipped.personas:
        assert any(m.serves(persona.model) for m in shipped.models), persona.name


@pytest.mark.parametrize("target", ["vendor/", "other/x", "vendorx"])
def test_a_fallback_must_name_something_that_resolves(target: str) -> None:
    text = (
        "models:\n"
        "  - {name: vendor/*, provider: openai_compatible, base_url: http://h/v1}\n"
        "  - {name: a, provider: openai_compatible, base_url: http://h/v1,"
        f" fallbacks: [{target}]}}\n"
    )
    with pytest.raises(ConfigError, match="falls back to"):
        parse_config(text, "inline", {})
    ok = text.replace(f"[{target}]", "[vendor/x]")
    assert parse_config(ok, "inline", {}).models[1].fallbacks == ["vendor/x"]
