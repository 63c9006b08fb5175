"""Attention implementations: the einsum that CPU and TPU run, and jax.nn.dot_product_attention
(cuDNN on GPUs) behind the same call, with the same grouped heads, mask layout and fully masked
rows; cuDNN is chosen only where its kernels take the shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mats_jax.models.layers import attention, cudnn_attention_fits


def inputs(rng, b=2, t=6, s=8, n=4, kv=2, h=16):
    q, k, v = (
        jnp.asarray(rng.normal(size=shape), jnp.float32)
        for shape in ((b, t, n, h), (b, s, kv, h), (b, s, kv, h))
    )
    mask = rng.random((b, t, s)) < 0.7
    mask[0, 2] = False  # a query that sees nothing (left padding)
    return q, k, v, jnp.asarray(mask)


def test_default_on_cpu_is_the_einsum_bit_for_bit(rng):
    q, k, v, mask = inputs(rng)
    assert np.array_equal(
        attention(q, k, v, mask), attention(q, k, v, mask, implementation="einsum")
    )


def test_dot_product_attention_path_matches_the_einsum(rng):
    """What the cuDNN call receives (heads grouped, mask [B,1,T,S]) checked through its XLA twin."""
    q, k, v, mask = inputs(rng)
    with jax.default_matmul_precision("highest"):
        einsum = attention(q, k, v, mask, implementation="einsum")
        fused = attention(q, k, v, mask, implementation="xla")
    np.testing.assert_allclose(fused, einsum, atol=1e-5)
    np.testing.assert_allclose(
        fused[0, 2], jnp.broadcast_to(v[0].mean(0).repeat(2, axis=0), (4, 16)), atol=1e-5
    )


def test_dot_product_attention_path_has_the_einsums_gradients(rng):
    """The query that sees nothing gets no gradient to q or k and a uniform one to v, as in the
    einsum (cuDNN's own backward gets that row wrong, which the path works around)."""
    q, k, v, mask = inputs(rng)
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def grads(implementation):
        loss = lambda q, k, v: jnp.sum(
            attention(q, k, v, mask, implementation=implementation) * cotangent
        )
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    with jax.default_matmul_precision("highest"):
        einsum, fused = grads("einsum"), grads("xla")
    for got, expected in zip(fused, einsum):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(fused[0][0, 2] == 0)


@pytest.mark.parametrize(
    "dtype, head_dim, t, s, backend, fits",
    [
        (jnp.bfloat16, 128, 200, 200, "gpu", True),
        (jnp.float16, 64, 8, 16, "gpu", True),
        (jnp.bfloat16, 128, 200, 200, "cpu", False),
        (jnp.bfloat16, 128, 200, 200, "tpu", False),
        (jnp.float32, 128, 200, 200, "gpu", False),
        (jnp.bfloat16, 36, 200, 200, "gpu", False),
        (jnp.bfloat16, 256, 200, 200, "gpu", False),
        (jnp.bfloat16, 128, 1, 240, "gpu", False),  # a decoding step
    ],
)
def test_cudnn_only_where_its_kernels_fit(dtype, head_dim, t, s, backend, fits):
    assert cudnn_attention_fits(dtype, head_dim, t, s, backend) is fits
