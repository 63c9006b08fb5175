"""The repository and the shared data beside it (../shared), found from this file's place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository
SHARED = ROOT.parent / "shared"
DATA_ROOT = Path(os.environ.get("MATS_JAX_DATA_ROOT", SHARED / "data"))
ESC50 = DATA_ROOT / "audio" / "esc50"
# golden outputs of the original (PyTorch) MATS code
FIXTURE = SHARED / "fixtures" / "mats_reference.npz"

requires_data = pytest.mark.skipif(
    not (DATA_ROOT / "captions").is_dir(), reason=f"real data not found at {DATA_ROOT}"
)
