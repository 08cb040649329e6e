#!/usr/bin/env bash
# The agent CLIs the tests drive through Puente, from the npm registry: Claude Code (the
# Anthropic Messages front door) and Codex CLI (the Responses front door). Installed into
# .cache/clients (ignored by git); idempotent: a second run only re-checks.
#   scripts/install-clients.sh        # skips, saying so, on a machine without npm
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=("@anthropic-ai/claude-code@2.1.332" "@openai/codex@0.171.0")
prefix=.cache/clients
if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: the Claude Code and Codex tests will be skipped"
    exit 0
fi
key="$(printf '%s\n' "${packages[@]}" | sha256sum | cut -d' ' -f1)"
stamp="$prefix/.puente-clients-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "agent CLIs in $prefix are up to date"
    exit 0
fi
mkdir -p "$prefix"
echo "installing ${packages[*]} into $prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "${packages[@]}"
echo "$key" >"$stamp"
