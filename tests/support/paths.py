"""The repository and the shared data beside it (../shared), found from this file's place."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
SHARED = ROOT.parent / "shared"
DATA_ROOT = Path(os.environ.get("MATS_JAX_DATA_ROOT", SHARED / "data"))
ESC50 = DATA_ROOT / "audio" / "esc50"
# golden outputs of the original (PyTorch) MATS code
FIXTURE = SHARED / "fixtures" / "mats_reference.npz"


def shared(path: Path) -> Path:
    """`path`, a file or folder of the shared data, which must exist: a test that needs missing
    shared data fails (with this message), it is never skipped."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: shared data missing (expected ../shared beside the repository)"
        )
    return path
