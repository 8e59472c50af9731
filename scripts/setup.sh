#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv with pinned packages, and with --test the system
# packages the tests and benchmarks use (PostgreSQL 15 server, Debian's Chromium, SpamAssassin,
# Postfix's smtp-sink/smtp-source for bench/send.py).
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

# Postfix only for its test programs smtp-sink and smtp-source (/usr/sbin); the mail server itself must
# never run here. How: a policy-rc.d that denies every service start (exit 101) is in place during the
# install (ours, removed afterwards, unless one exists already, e.g. Docker's, which does the same), so
# the package's scripts never start postfix; debconf's "No configuration" writes no main.cf; and on a
# systemd machine the unit is disabled, so it does not start at the next boot either.
if [ "$want_test" -eq 1 ] && { [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/sbin/smtp-source ]; }; then
    echo "installing system packages: postfix (for smtp-sink and smtp-source; the service is not started)"
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    [ "${#apt_missing[@]}" -gt 0 ] || as_root apt-get update -qq
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null \
        || status=$?
    [ "$own_policy" -eq 0 ] || as_root rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || exit "$status"
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --quiet postfix.service 2>/dev/null || true
    fi
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
# An editable install leaves our own modules uncompiled; compile them now, so that no command pays
# for it at start-up (with PYTHONDONTWRITEBYTECODE set, every one of them would).
.venv/bin/python -m compileall -q -j 0 engine >/dev/null || true
