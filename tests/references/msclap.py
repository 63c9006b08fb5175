"""msclap's own PyTorch CLAP (2023), full size, randomised: the msclap parity tests' reference."""

from __future__ import annotations

import functools
import sys
import types

import torch
import transformers


def import_msclap_clap():
    """`msclap.models.clap` without torchaudio: msclap's package __init__ imports its wrapper,
    which imports torchaudio (a CUDA build on PyPI that cannot load with CPU torch). The stub
    lives only while msclap is imported, so transformers never sees it."""
    _ = transformers.GPT2Model  # resolve transformers' lazy imports before the stub exists
    stub = types.ModuleType("torchaudio")
    stub.transforms = types.ModuleType("torchaudio.transforms")
    saved = {k: sys.modules.get(k) for k in ("torchaudio", "torchaudio.transforms")}
    sys.modules.update({"torchaudio": stub, "torchaudio.transforms": stub.transforms})
    try:
        import msclap.models.clap as msclap_clap
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return msclap_clap


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every BatchNorm/LayerNorm a random affine (and bn0 realistic dB statistics), and the
    relative-position tables and logit scale non-default values."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda t: torch.randn(t.shape, generator=g)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.3 * randn(module.weight))
                module.bias.copy_(0.3 * randn(module.bias))
            if isinstance(module, torch.nn.BatchNorm2d):  # log-mel in dB: mean ~ -30, std ~ 10-20
                module.running_mean.copy_(-30 + 10 * randn(module.running_mean))
                module.running_var.copy_(
                    100 + 300 * torch.rand(module.running_var.shape, generator=g)
                )
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(0.5 * randn(p))
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(2.5)


@functools.lru_cache(maxsize=1)
def msclap_reference() -> torch.nn.Module:
    """msclap 2023 CLAP, eval mode, randomised (built once per test session)."""
    msclap_clap = import_msclap_clap()
    torch.manual_seed(0)

    class ConfigBuiltGPT2:  # stands in for AutoModel.from_pretrained("gpt2")
        @staticmethod
        def from_pretrained(name):
            assert name == "gpt2", name
            return transformers.GPT2Model(transformers.GPT2Config())

    original, msclap_clap.AutoModel = msclap_clap.AutoModel, ConfigBuiltGPT2
    try:  # the arguments CLAPWrapper.load_clap passes for config_2023.yml
        model = msclap_clap.CLAP(
            audioenc_name="HTSAT",
            sample_rate=44100,
            window_size=1024,
            hop_size=320,
            mel_bins=64,
            fmin=50,
            fmax=8000,
            classes_num=527,
            out_emb=768,
            text_model="gpt2",
            transformer_embed_dim=768,
            d_proj=1024,
        )
    finally:
        msclap_clap.AutoModel = original
    randomise(model.eval())
    return model


def msclap_text_encoder(
    n_layer: int = 2, n_embd: int = 32, n_head: int = 2, d_out: int = 24, seed: int = 0
) -> torch.nn.Module:
    """msclap's own `TextEncoder` (GPT-2 tower + Projection) around a small `GPT2Model`, built
    from `transformers.GPT2Config` with the hub gpt2's dropout rates (its defaults), randomised;
    in train mode, as the original MATS runs it."""
    msclap_clap = import_msclap_clap()
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=80, attn_implementation="eager"
    )

    class ConfigBuiltGPT2:
        @staticmethod
        def from_pretrained(name):
            assert name == "gpt2", name
            return transformers.GPT2Model(config)

    original, msclap_clap.AutoModel = msclap_clap.AutoModel, ConfigBuiltGPT2
    try:
        encoder = msclap_clap.TextEncoder(d_out, "gpt2", n_embd)
    finally:
        msclap_clap.AutoModel = original
    randomise(encoder, seed)
    return encoder.train()


def copy_text_weights(encoder: torch.nn.Module, clap) -> None:
    """Puts a msclap `TextEncoder`'s weights into the text tower and text projection of our
    `clap` (same sizes; an abstract one gets real arrays there), through the converter's own
    msclap key map."""
    import jax.numpy as jnp
    from flax import nnx

    from mats_jax.convert.clap import msclap_keymap

    tensors = {f"caption_encoder.{k}": v.detach().numpy() for k, v in encoder.state_dict().items()}
    converted = msclap_keymap().to_flax(tensors, "msclap TextEncoder")
    params = dict(nnx.to_flat_state(nnx.state(clap, nnx.Param)))
    for key, value in converted.items():
        variable = params[tuple(int(k) if k.isdigit() else k for k in key.split("."))]
        assert variable.shape == value.shape, key
        variable.set_value(jnp.asarray(value))
