#!/usr/bin/env bash
# Install the gateway into .venv (with the test and lint tools). Idempotent: a second run only
# re-checks. The engine (vLLM) lives in its own venv: scripts/install-engine.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "creating gateway venv .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.puente-stamp
key="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "gateway venv .venv is up to date"
    exit 0
fi
echo "installing Puente and its dev tools into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
echo "$key" >"$stamp"
