#!/usr/bin/env bash
# Debian's chromium for the web console's end-to-end tests (tests/test_console.py). Playwright
# drives it by path; it cannot download a browser of its own here. Idempotent: a second run
# only checks. Needs root (or sudo) the first time.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    echo "chromium is installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
    sudo="sudo"
fi
echo "installing chromium (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
