#!/usr/bin/env bash
# Install everything (gateway venv, engine venv, default model) and start Puente on
# 127.0.0.1:8000 with puente.yaml: the local SmolLM2 model on a supervised vLLM engine, plus
# whichever cloud models have their API key in the environment.
#   scripts/serve.sh                       # PUENTE_CONFIG, PUENTE_HOST, PUENTE_PORT override
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install.sh
scripts/install-engine.sh
.venv/bin/puente models prepare
.venv/bin/puente models prepare --embedding
exec .venv/bin/puente serve --config "${PUENTE_CONFIG:-puente.yaml}" \
    --host "${PUENTE_HOST:-127.0.0.1}" --port "${PUENTE_PORT:-8000}"
