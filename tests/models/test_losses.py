"""`next_token_loss` against PyTorch's cross_entropy with ignore_index=-100."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mats_jax.models.losses import next_token_loss


def torch_loss(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    labels = torch.tensor(np.where(mask, targets, -100), dtype=torch.long)
    out = F.cross_entropy(
        torch.tensor(logits, dtype=torch.float64).flatten(0, 1), labels.flatten(), ignore_index=-100
    )
    return float(out)


@pytest.mark.parametrize("shape", [(2, 7, 11), (3, 16, 257)])
def test_matches_torch(rng, shape):
    b, t, v = shape
    logits = rng.normal(0, 3, shape).astype(np.float32)
    targets = rng.integers(0, v, (b, t))
    mask = rng.random((b, t)) < 0.7
    mask[0, 0] = True
    loss, count = next_token_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    assert loss.dtype == jnp.float32 and count.dtype == jnp.float32
    assert int(count) == mask.sum()
    assert abs(float(loss) - torch_loss(logits, targets, mask)) <= 1e-6 * max(1.0, abs(float(loss)))


def test_masked_targets_are_ignored(rng):
    """Targets under a zero mask may be -100 or out of range: no effect on value or gradient."""
    logits = jnp.asarray(rng.normal(size=(2, 5, 13)).astype(np.float32))
    targets = rng.integers(0, 13, (2, 5))
    mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
    garbage = np.where(mask, targets, -100)
    loss_a, _ = next_token_loss(logits, jnp.asarray(targets), jnp.asarray(mask))
    loss_b, _ = next_token_loss(logits, jnp.asarray(garbage), jnp.asarray(mask))
    assert float(loss_a) == float(loss_b)
    grad = jax.grad(lambda x: next_token_loss(x, jnp.asarray(garbage), jnp.asarray(mask))[0])(
        logits
    )
    assert np.all(np.asarray(grad)[~mask] == 0)
    assert np.isfinite(np.asarray(grad)).all()


def test_gradient_matches_torch(rng):
    logits = rng.normal(0, 2, (2, 6, 17)).astype(np.float32)
    targets = rng.integers(0, 17, (2, 6))
    mask = rng.random((2, 6)) < 0.6
    mask[1, 2] = True
    grad = jax.grad(lambda x: next_token_loss(x, jnp.asarray(targets), jnp.asarray(mask))[0])(
        jnp.asarray(logits)
    )
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(
        x.flatten(0, 1), torch.tensor(np.where(mask, targets, -100)).flatten(), ignore_index=-100
    ).backward()
    np.testing.assert_allclose(np.asarray(grad), x.grad.numpy(), atol=1e-6)


def test_bf16_logits_and_empty_mask():
    logits = jnp.ones((1, 3, 5), jnp.bfloat16)
    loss, count = next_token_loss(logits, jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 3)))
    assert loss.dtype == jnp.float32 and float(loss) == 0.0 and float(count) == 0.0
    loss, _ = next_token_loss(logits, jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3)))
    assert abs(float(loss) - np.log(5)) < 1e-6
