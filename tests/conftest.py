"""Shared test set-up: exact float32 matmuls, so parity tolerances measure the port, not TF32/bf16."""

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


def torch_state(module) -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays (what our converters consume)."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
