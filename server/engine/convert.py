"""Convert a llama-family GGUF file into a Hugging Face folder that vLLM can serve.

Run by the *engine* venv's python (it imports torch, transformers and gguf), never imported by
the gateway, which reaches it through `server.engine.prepare`:

    .venv-engine/bin/python server/engine/convert.py MODEL.gguf OUT_DIR

vLLM cannot load GGUF. transformers can (`gguf_file=`) and dequantizes while loading, but then
refuses to `save_pretrained` a model that still carries its GGUF quantization config, so the
weights are copied into a fresh model of the same architecture and that one is saved.

Weights are saved in float32: dequantized Q4 values (fp16 scale x 4-bit int + fp16 min) are
exact in float32 but not in bfloat16, so the folder holds exactly the weights llama.cpp computes
with, and the CPU engine, which runs float32, loads them without a cast. The cost is disk:
~540 MB instead of ~270 MB. (vLLM's `--dtype auto` still downcasts them to bfloat16, 3x slower
on this AVX2 CPU: the engine must be started with `--dtype float32`; see docs/engine-notes.md.)

The output is written to a temporary sibling folder and renamed into place, so a reader sees
either no folder or a complete one; it carries `puente-convert.json` (the source's sha256),
which `prepare.py` reads to decide whether the folder is current. Same input, same bytes out.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# Imported as untyped modules on purpose: the gateway's venv (where mypy runs) has none of them,
# and in the engine venv transformers' partial annotations would make --strict fail anyway.
gguf: Any = importlib.import_module("gguf")
torch: Any = importlib.import_module("torch")
transformers: Any = importlib.import_module("transformers")

# Keep in step with server/engine/prepare.py (this script must not import the gateway).
MARKER_NAME = "puente-convert.json"
FORMAT_VERSION = 1
CHATML_START = "<|im_start|>"
CHATML_END = "<|im_end|>"


def log(message: str) -> None:
    print(f"convert: {message}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_chat_template(path: Path) -> str:
    """The chat template stored in the GGUF (`tokenizer.chat_template`), read directly so the
    saved tokenizer carries the file's own template whatever transformers does with it."""
    field = gguf.GGUFReader(str(path)).get_field("tokenizer.chat_template")
    if field is None:
        raise ValueError(f"{path.name} has no tokenizer.chat_template")
    template = str(field.contents())
    if CHATML_START not in template:
        raise ValueError(f"{path.name}: chat template is not ChatML ({CHATML_START} missing)")
    return template


def save_model(source: Path, dest: Path, dtype: Any = None) -> None:
    dtype = torch.float32 if dtype is None else dtype
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=dtype
    )
    config = loaded.config
    # The quantization config is what makes save_pretrained refuse; the name/path would write
    # this machine's temp folder into config.json and break determinism.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ""
    config.dtype = dtype
    torch.manual_seed(0)  # the fresh init is overwritten below, but keep even that reproducible
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    # strict: a tensor name or shape that does not line up fails here, not as garbage output.
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    fresh.save_pretrained(dest, safe_serialization=True)


def save_tokenizer(source: Path, dest: Path, family: str = "smollm2") -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    if family == "qwen2":
        # Qwen2.5's GGUF carries its own ChatML template (tools included), eos <|im_end|> and
        # no BOS: keep its tokens as they are, only its template is read from the file.
        tokenizer.chat_template = gguf_chat_template(source)
        tokenizer.name_or_path = ""
        tokenizer.save_pretrained(dest)
        return
    # SmolLM2's ChatML: every turn is <|im_start|>role ... <|im_end|>; generation stops at
    # <|im_end|>, which is also the pad token. The GGUF asks for no BOS and the template adds
    # none, so the engine must not prepend one either.
    tokenizer.bos_token = CHATML_START
    tokenizer.eos_token = CHATML_END
    tokenizer.pad_token = CHATML_END
    tokenizer.add_bos_token = False
    tokenizer.chat_template = gguf_chat_template(source)
    tokenizer.name_or_path = ""
    tokenizer.save_pretrained(dest)


def replace_dir(staged: Path, dest: Path) -> None:
    """Move `staged` to `dest`; an existing `dest` is moved aside first and then deleted."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    staged.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def convert(source: Path, dest: Path, dtype: str = "float32", family: str = "smollm2") -> None:
    start = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        log(f"loading and dequantizing {source}")
        save_model(source, staged, getattr(torch, dtype))
        save_tokenizer(source, staged, family)
        marker = {"format": FORMAT_VERSION, "source": source.name, "sha256": sha256_of(source)}
        if dtype != "float32":
            marker["dtype"] = dtype  # only when not the default: SmolLM2's folder is unchanged
        (staged / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        # safetensors writes its file 0600; the engine may run as another user than the one
        # who prepared a shared cache (a container image built as root).
        for path in staged.iterdir():
            path.chmod(0o644)
        replace_dir(staged, dest)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log(f"wrote {dest} in {time.monotonic() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("gguf", type=Path, help="the .gguf file to convert")
    parser.add_argument("output", type=Path, help="folder to write (replaced if it exists)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--family", choices=["smollm2", "qwen2"], default="smollm2")
    args = parser.parse_args(argv)
    # Progress bars would flood the log of whoever runs this; transformers' GGUF loader uses
    # tqdm directly, which only TQDM_DISABLE=1 in the environment silences (prepare.py sets it).
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    convert(args.gguf.resolve(), args.output.resolve(), args.dtype, args.family)
    return 0


if __name__ == "__main__":
    sys.exit(main())
