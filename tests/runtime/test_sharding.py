"""Every parameter names its axes, so the sharding rules table can place it on any mesh."""

import jax
from flax import nnx
from jax.sharding import PartitionSpec

from mats_jax.models.lora import add_lora
from mats_jax.models.params import flat_params
from mats_jax.models.registry import build_model
from mats_jax.runtime.sharding import partition_spec, state_shardings
from tests.references.llama import TINY


def test_every_parameter_has_one_axis_name_per_dimension():
    for family, config in [
        ("llama", TINY),
        ("gpt2", dict(n_layer=2, n_embd=64, n_head=4, vocab_size=99)),
    ]:
        model = build_model(family, config)
        add_lora(
            model,
            targets=("q_proj", "v_proj") if family == "llama" else ("c_attn",),
            rngs=nnx.Rngs(0),
        )
        for path, var in flat_params(model).items():
            axes = var.get_metadata().get("logical_axes")
            assert axes is not None and len(axes) == var.ndim, path


def test_rules_map_logical_axes_and_use_each_mesh_axis_once():
    assert partition_spec(("embed", "mlp")) == PartitionSpec("fsdp", "tensor")
    assert partition_spec(("vocab", "embed")) == PartitionSpec("tensor", "fsdp")
    assert partition_spec(("batch", None)) == PartitionSpec(("data", "fsdp"), None)
    assert partition_spec(("mlp", "q_heads")) == PartitionSpec("tensor", None)


def test_state_shardings_cover_the_model():
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"))
    model = build_model("llama", TINY)
    shardings = state_shardings(nnx.state(model, nnx.Param), mesh)
    specs = {".".join(map(str, p)): s.spec for p, s in nnx.to_flat_state(shardings)}
    assert specs["layers.0.mlp.up_proj.kernel"] == PartitionSpec("fsdp", "tensor")
    assert len(specs) == len(flat_params(model))


def test_a_dimension_its_mesh_axes_do_not_divide_is_replicated():
    """jit takes only even shards: TINY's 211-token vocabulary (like Vicuna's 32001) stays whole
    over tensor=2, and everything else is split as the rules say."""
    mesh = jax.sharding.AbstractMesh((1, 2, 2), ("data", "fsdp", "tensor"))
    shardings = state_shardings(nnx.state(build_model("llama", TINY), nnx.Param), mesh)
    specs = {".".join(map(str, p)): s.spec for p, s in nnx.to_flat_state(shardings)}
    assert specs["embed_tokens.embedding"] == PartitionSpec(None, "fsdp")
    assert specs["lm_head.kernel"] == PartitionSpec("fsdp", None)
    assert specs["layers.0.mlp.up_proj.kernel"] == PartitionSpec("fsdp", "tensor")
