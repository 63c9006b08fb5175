"""The MATS loss against transformers: the same prompt embeddings through LlamaForCausalLM with
labels -100 outside answer + EOS give the same loss; only the bridge and LoRA are trainable."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from mats_jax.config import LoraConfig, MapperConfig, MATSConfig
from mats_jax.convert.llm import from_torch_state
from mats_jax.mats.model import MATS, TRAINABLE
from mats_jax.mats.prompt import PromptBuilder
from mats_jax.models.tokenizer import load_tokenizer
from mats_jax.runtime.assets import smollm2_gguf_path
from tests.references.llama import TINY, reference
from tests.references.torch_io import torch_state

CONFIG = TINY | dict(vocab_size=49152)


def build():
    ref = reference(CONFIG)
    llm = from_torch_state("llama", CONFIG, torch_state(ref), source="reference")
    mapper = MapperConfig(clap_dim=32, dim=48, prefix_length=4, clip_length=4, num_layers=2)
    model = MATS(llm, MATSConfig(mapper=mapper, lora=LoraConfig(dropout=0.0)), rngs=nnx.Rngs(0))
    return ref, model


def test_loss_matches_transformers_on_the_same_embeddings():
    ref, model = build()
    tokenizer = load_tokenizer(smollm2_gguf_path())
    batch = PromptBuilder(tokenizer, tail_length=40).training_batch(
        ["Describe the following audio in a caption.", "Is it raining?"],
        ["[audio caption clotho]", "[audio qa]"],
        ["Birds sing near a stream.", "no"],
    )
    clap = jax.random.normal(jax.random.key(1), (2, 32))
    loss, count = model.loss(clap, batch, noise_key=None)

    prefix = np.asarray(model.prefix(clap))
    sequence = np.asarray(model.sequence(jnp.asarray(prefix), batch.head, batch.tail))
    start = len(batch.head) + prefix.shape[1]
    labels = np.full(sequence.shape[:2], -100)
    labels[:, start:] = np.where(batch.loss_mask, batch.tail, -100)
    mask = np.concatenate([np.ones((2, start), bool), batch.tail_mask], axis=1)
    with torch.no_grad():  # B of LoRA is zero at init, so the base model is the reference
        out = ref(
            inputs_embeds=torch.tensor(sequence),
            attention_mask=torch.tensor(mask),
            labels=torch.tensor(labels),
        )
    assert int(count) == batch.loss_mask.sum()
    np.testing.assert_allclose(float(loss), out.loss.item(), atol=1e-5, rtol=0)


def test_only_bridge_and_adapters_are_trainable():
    _, model = build()
    trainable = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, TRAINABLE))}
    assert trainable and all(
        k.startswith(("mapper.", "projector.")) or k.endswith(("lora_a", "lora_b"))
        for k in trainable
    )
    assert any(k.startswith("mapper.") for k in trainable) and any(
        k.startswith("projector.") for k in trainable
    )
    assert sum(k.endswith("lora_a") for k in trainable) == 2 * CONFIG["num_hidden_layers"]
