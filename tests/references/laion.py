"""transformers' LAION ClapModel (fused) and ClapAudioModel, randomised: the LAION reference."""

from __future__ import annotations

import functools

import numpy as np
import torch
import transformers

from mats_jax.clap.model import CLAP, ClapConfig
from mats_jax.convert.clap import from_hf_state
from tests.references.torch_io import torch_state


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Linear/Conv weights ~ N(0, 1/fan_in) with random biases; every norm a random affine;
    BatchNorm statistics like dB log-mels (bn0) or unit-scale activations (the AFF block);
    relative-position tables and the two temperatures non-default."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda t: torch.randn(t.shape, generator=g)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.copy_(randn(module.weight) / np.sqrt(module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.copy_(0.1 * randn(module.bias))
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.3 * randn(module.weight))
                module.bias.copy_(0.3 * randn(module.bias))
            if isinstance(module, torch.nn.BatchNorm2d):
                mel = module.num_features == 64  # bn0 over mel bins sees dB values
                module.running_mean.copy_(
                    (-30 + 10 * randn(module.running_mean))
                    if mel
                    else 0.3 * randn(module.running_mean)
                )
                spread = torch.rand(module.running_var.shape, generator=g)
                module.running_var.copy_(100 + 300 * spread if mel else 0.5 + spread)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(0.5 * randn(p))
        if hasattr(model, "logit_scale_a"):
            model.logit_scale_a.fill_(2.5)
            model.logit_scale_t.fill_(3.0)


@functools.lru_cache(maxsize=1)
def fused_reference() -> torch.nn.Module:
    """transformers ClapModel, fused, eval mode, randomised (built once per test session)."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.ClapModel(
        transformers.ClapConfig(audio_config={"enable_fusion": True})
    ).eval()
    randomise(model)
    return model


@functools.lru_cache(maxsize=1)
def unfused_audio_reference() -> torch.nn.Module:
    """transformers ClapAudioModel, unfused, holding the fused reference's audio weights."""
    audio = transformers.ClapAudioModel(transformers.ClapAudioConfig()).eval()
    fused = fused_reference().audio_model.state_dict()
    missing, unexpected = audio.load_state_dict(fused, strict=False)
    assert not missing and all(".mel_conv2d." in k or ".fusion_model." in k for k in unexpected)
    return audio


def reference_state(fusion: bool) -> dict[str, np.ndarray]:
    """A full ClapModel state dict (numpy) of the fused or unfused reference."""
    state = torch_state(fused_reference())
    if not fusion:
        state = {k: v for k, v in state.items() if not k.startswith("audio_model.")}
        state |= {f"audio_model.{k}": v for k, v in torch_state(unfused_audio_reference()).items()}
    return state


@functools.lru_cache(maxsize=2)
def our_model(fusion: bool) -> CLAP:
    return from_hf_state(
        reference_state(fusion), ClapConfig.laion(fusion=fusion), source="reference"
    )
