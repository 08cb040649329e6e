#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (the gateway venv, the vLLM
# engine venv and its default model, chromium, Postgres and Redis), runs the linters, then pytest.
#   scripts/test.sh                 # everything
#   scripts/test.sh -m 'not engine' # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS

scripts/install.sh
scripts/install-engine.sh
.venv/bin/puente models prepare
.venv/bin/puente models prepare --embedding
# Debian's chromium, which the web console's browser tests drive (tests/test_console.py).
scripts/install-browser.sh
# Claude Code and Codex CLI, which the Messages and Responses tests drive through Puente.
scripts/install-clients.sh
# Postgres and Redis for the multi-replica tests (needs root on a fresh machine);
# PUENTE_SKIP_SERVICES=1 skips those tests instead.
if [[ "${PUENTE_SKIP_SERVICES:-}" != 1 ]]; then
    scripts/install-services.sh
fi
echo "setup took $((SECONDS - start)) s"

echo "== ruff"
.venv/bin/ruff check server tests bench
.venv/bin/ruff format --check server tests bench
echo "== mypy --strict server"
.venv/bin/mypy server
echo "== pytest"
.venv/bin/python -m pytest "$@"
