"""mats_jax: MATS (audio language model with text-only supervision) in JAX and Flax NNX."""
