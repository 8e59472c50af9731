#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv with pinned packages, and with --test the system
# packages the tests use (PostgreSQL 15 server, Debian's Chromium, SpamAssassin).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
if [ "$want_test" -eq 1 ]; then
    [ -x /usr/lib/postgresql/15/bin/initdb ] || apt_missing+=(postgresql-15)
    command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
    command -v spamassassin >/dev/null 2>&1 || apt_missing+=(spamassassin)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${apt_missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if [ "$want_test" -eq 1 ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -E '^WARNING: Location' || true
else
    .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v -E '^WARNING: Location' || true
fi
.venv/bin/python -c "import engine, sqlmodel, flask" # fail loudly if the install did not work
