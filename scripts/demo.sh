#!/usr/bin/env bash
# Quick start: set up, then run scheduler + workers + web UI on the embedded defaults with demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/valuemail run --demo "$@"
