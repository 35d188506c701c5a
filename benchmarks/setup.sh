#!/usr/bin/env bash
# Create benchmarks/.venv with jupyter_stream (editable) plus matplotlib and DSPy, for
#   benchmarks/.venv/bin/python benchmarks/run.py [--quick] [--dspy]
# The main .venv stays free of them: run.py skips the plots and the DSPy comparison when they are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
PYTHON="${PYTHON:-python3}"
test -x .venv/bin/python || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .. -r requirements.txt
.venv/bin/python -c "import dspy, matplotlib, jupyter_stream; print('benchmarks/.venv ready: dspy', dspy.__version__, '| matplotlib', matplotlib.__version__)"
