#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install llmfti with every extra.
# torch is installed first and pinned by constraints.txt: a loose torch requirement would pull
# the CUDA build (gigabytes) on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[serve,train,eval,dev,ray,monitor,tracing]"
"$VENV/bin/python" -m pip check
echo "installed into $VENV"
