#!/usr/bin/env bash
# All GPU checks in one call (issue 23): benchmarks/gpu_check.py with the project's Python.
# Usage: benchmarks/gpu_check.sh [--dry-run --out DIR] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec "$PY" benchmarks/gpu_check.py "$@"
