#!/usr/bin/env bash
# Quick start: set up (Python packages, PostgreSQL 15, Chromium, SpamAssassin), then run every test on
# SQLite and PostgreSQL. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
