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
export SMTP_TLS_SURVEY_REQUIRE_RAY=1  # tests/integration/test_cluster.py: Ray is installed here, a missing one fails
exec .venv/bin/python -m pytest "$@"
