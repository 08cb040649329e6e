#!/usr/bin/env bash
# Postgres and Redis server binaries for the tests marked `services` (tests/services.py starts
# private instances of both on 127.0.0.1 under a temporary folder; nothing here starts a service).
#
#   scripts/install-services.sh      # idempotent; returns at once when both are installed
#
# Debian packages: postgresql (initdb/postgres under /usr/lib/postgresql/N/bin) and redis-server.
# Needs root (apt-get); CI runs as root.
set -euo pipefail

have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_redis() {
    command -v redis-server >/dev/null 2>&1
}

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
if ((${#missing[@]} == 0)); then
    echo "postgres and redis: installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-services: need root to install ${missing[*]} (or set PUENTE_SKIP_SERVICES=1)" >&2
    exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: the packages must not start their own system-wide servers.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_postgres && have_redis
echo "postgres and redis: installed"
