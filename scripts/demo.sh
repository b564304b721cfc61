#!/usr/bin/env bash
# The main job on a built-in demo world: start a real DNS server and real mail servers with
# different TLS postures on loopback, scan them, write a Parquet dataset and print the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m worlds.demo "$@"
