#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, lint, strict typing, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check scanner tests worlds benchmarks
echo "== mypy --strict scanner/ worlds/"
.venv/bin/mypy scanner worlds
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
