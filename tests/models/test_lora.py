"""LoRA against peft on the same weights, and merged against unmerged."""

import jax.numpy as jnp
import numpy as np
import peft
import torch
from flax import nnx

from mats_jax.convert.llm import llama_keymap
from mats_jax.models.lora import add_lora, merge_lora
from mats_jax.models.params import load_params, param_arrays
from mats_jax.models.registry import build_model
from tests.references.llama import TINY, reference
from tests.references.torch_io import torch_state


def peft_model():
    ref = reference(TINY)
    config = peft.LoraConfig(
        r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]
    )
    model = peft.get_peft_model(ref, config).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero: make the adapters do something
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    return model


def ported_with_adapters(peft_lm):
    model = build_model("llama", TINY)
    add_lora(model, targets=("q_proj", "v_proj"), rank=8, alpha=32, dropout=0.1, rngs=nnx.Rngs(0))
    model.eval()
    state = {k.removeprefix("base_model.model."): v for k, v in torch_state(peft_lm).items()}
    state = {k.replace(".base_layer", ""): v for k, v in state.items()}
    load_params(model, llama_keymap().to_flax(state, "peft"))
    return model


def test_lora_matches_peft(rng):
    peft_lm = peft_model()
    tokens = rng.integers(0, TINY["vocab_size"], (2, 40))
    with torch.no_grad():
        expected = peft_lm(torch.tensor(tokens)).logits.numpy()
    model = ported_with_adapters(peft_lm)
    logits, _ = model(jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    with torch.no_grad(), peft_lm.disable_adapter():
        without = peft_lm(torch.tensor(tokens)).logits.numpy()
    assert np.abs(expected - without).max() > 1e-2  # the adapters matter in this test


def test_merged_equals_unmerged_and_only_adapters_are_lora_params(rng):
    peft_lm = peft_model()
    model = ported_with_adapters(peft_lm)
    lora = param_arrays(model, nnx.LoRAParam)
    assert lora and all(k.endswith(("lora_a", "lora_b")) for k in lora)
    assert {k.split(".")[3] for k in lora} == {"q_proj", "v_proj"}
    tokens = jnp.asarray(rng.integers(0, TINY["vocab_size"], (2, 40)))
    unmerged, _ = model(tokens)
    merge_lora(model)
    assert not param_arrays(model, nnx.LoRAParam)
    merged, _ = model(tokens)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged), atol=1e-5, rtol=0)
