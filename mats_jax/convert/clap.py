"""CLAP checkpoints in: msclap's `CLAP_weights_{2023}.pth` or a transformers `ClapModel` folder
(LAION-CLAP) -> a mats_jax checkpoint folder.

msclap (`--from msclap`): the .pth is a dict whose "model" entry is the state dict of
`msclap.models.clap.CLAP`. Every tensor maps to one of our parameters, except known buffers and
unused modules, which are skipped:
  - GPT-2 causal-mask buffers `h.*.attn.bias` / `h.*.attn.masked_bias` (in real checkpoints),
  - HTSAT `relative_position_index` and shifted-window `attn_mask` (we rebuild both),
  - `bn0.num_batches_tracked`,
  - HTSAT `head` Linear(527, 527): built by msclap but never called with TSCAM on — not ported.
Any other unexpected tensor, and any parameter the file lacks, is a one-line ModelFileError
naming the key and the file. Conv2d kernels OIHW become HWIO; the STFT Conv1d kernels
(513, 1, 1024) become [1024, 513] matrices; torch Linear weights are transposed.

transformers `ClapModel` (`--from hf`, config.json + model.safetensors or pytorch_model.bin, and
preprocessor_config.json if present): the Swin attention's separate query/key/value Linears are
concatenated into our fused qkv (`Concat` rules); `batch_norm` is our `bn0`; the fused models'
`mel_conv2d` and AFF block map to `patch_embed.mel_kernel` / `patch_embed.fusion`. Skipped
buffers: `text_model.embeddings.position_ids` / `token_type_ids`, the Swin
`relative_position_index`, every BatchNorm's `num_batches_tracked`. Everything else must map, and
every parameter must be present (one-line ModelFileError otherwise).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from mats_jax.clap.htsat import HTSAT, HTSATConfig
from mats_jax.clap.load import abstract_clap, build_clap
from mats_jax.clap.model import CLAP, LAION, MSCLAP_2023, STATE_KINDS, ClapConfig
from mats_jax.convert.hf_io import read_hf_folder, read_torch_state
from mats_jax.convert.keymap import Concat, KeyMap, Rule, transpose
from mats_jax.convert.llm import gpt2_keymap
from mats_jax.models import store
from mats_jax.models.params import check_arrays, flat_params, load_params
from mats_jax.runtime.fileio import ModelFileError, check_directory

COMMAND = "convert clap"  # the marker of the folders the importers write

# ---------------------------------------------------------------------------------------------
# Layout changes, one function per direction (a Rule's `transform` and `inverse`).


def conv_to_flax(x: np.ndarray) -> np.ndarray:
    """Conv2d kernel OIHW -> HWIO."""
    return np.ascontiguousarray(x.transpose(2, 3, 1, 0))


def conv_to_torch(x: np.ndarray) -> np.ndarray:
    """HWIO -> OIHW."""
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1))


def stft_to_flax(x: np.ndarray) -> np.ndarray:
    """Conv1d(1 -> bins, kernel n_fft) weight [bins, 1, n_fft] -> matrix [n_fft, bins]."""
    return np.ascontiguousarray(x[:, 0, :].T)


def stft_to_torch(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T[:, None, :])


def conv1x1_to_flax(x: np.ndarray) -> np.ndarray:
    """Conv2d 1×1 weight [out, in, 1, 1] -> Linear kernel [in, out]."""
    return np.ascontiguousarray(x[:, :, 0, 0].T)


def conv1x1_to_torch(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T[:, :, None, None])


CONV = dict(transform=conv_to_flax, inverse=conv_to_torch)


def _norm(torch_name: str, flax_name: str) -> list[Rule]:
    return [
        Rule(f"{torch_name}.weight", f"{flax_name}.scale"),
        Rule(f"{torch_name}.bias", f"{flax_name}.bias"),
    ]


def _batch_norm(torch_name: str, flax_name: str) -> list[Rule]:
    return _norm(torch_name, flax_name) + [
        Rule(f"{torch_name}.running_mean", f"{flax_name}.mean"),
        Rule(f"{torch_name}.running_var", f"{flax_name}.var"),
    ]


def _linear(torch_name: str, flax_name: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{torch_name}.weight", f"{flax_name}.kernel", transpose)]
    if bias:
        rules.append(Rule(f"{torch_name}.bias", f"{flax_name}.bias"))
    return rules


def _msclap_htsat_rules(src: str, dst: str) -> list[Rule]:
    """msclap's HTSAT_Swin_Transformer (prefix `src`) -> our HTSAT (prefix `dst`), front end
    excluded.
    """
    block, bdst = f"{src}layers.*.blocks.*.", f"{dst}layers.*.blocks.*."
    down, ddst = f"{src}layers.*.downsample.", f"{dst}layers.*.downsample."
    return [
        *_batch_norm(f"{src}bn0", f"{dst}bn0"),
        Rule(f"{src}patch_embed.proj.weight", f"{dst}patch_embed.kernel", **CONV),
        Rule(f"{src}patch_embed.proj.bias", f"{dst}patch_embed.bias"),
        *_norm(f"{src}patch_embed.norm", f"{dst}patch_embed.norm"),
        *_norm(f"{block}norm1", f"{bdst}norm1"),
        *_linear(f"{block}attn.qkv", f"{bdst}attn.qkv"),
        *_linear(f"{block}attn.proj", f"{bdst}attn.proj"),
        Rule(
            f"{block}attn.relative_position_bias_table", f"{bdst}attn.relative_position_bias_table"
        ),
        *_norm(f"{block}norm2", f"{bdst}norm2"),
        *_linear(f"{block}mlp.fc1", f"{bdst}mlp.fc1"),
        *_linear(f"{block}mlp.fc2", f"{bdst}mlp.fc2"),
        *_norm(f"{down}norm", f"{ddst}norm"),
        *_linear(f"{down}reduction", f"{ddst}reduction", bias=False),
        *_norm(f"{src}norm", f"{dst}norm"),
        Rule(f"{src}tscam_conv.weight", f"{dst}tscam.kernel", **CONV),
        Rule(f"{src}tscam_conv.bias", f"{dst}tscam.bias"),
    ]


def msclap_htsat_ignore(src: str) -> tuple[str, ...]:
    return (
        f"{src}layers.*.blocks.*.attn.relative_position_index",
        f"{src}layers.*.blocks.*.attn_mask",
        f"{src}bn0.num_batches_tracked",
        f"{src}head.weight",
        f"{src}head.bias",
    )


def msclap_htsat_keymap(src: str = "", dst: str = "") -> KeyMap:
    """HTSAT alone (e.g. `msclap.models.htsat.HTSAT_Swin_Transformer`'s state dict); the
    spectrogram/log-mel extractor tensors are skipped here (they belong to the front end)."""
    ignore = msclap_htsat_ignore(src) + (
        f"{src}spectrogram_extractor.stft.conv_real.weight",
        f"{src}spectrogram_extractor.stft.conv_imag.weight",
        f"{src}logmel_extractor.melW",
    )
    return KeyMap(tuple(_msclap_htsat_rules(src, dst)), ignore=ignore)


def msclap_keymap() -> KeyMap:
    """The whole msclap CLAP (2023 layout) <-> `mats_jax.clap.model.CLAP` (both directions:
    `to_flax` imports, `to_torch` exports)."""
    htsat = "audio_encoder.base.htsat."
    stft = dict(transform=stft_to_flax, inverse=stft_to_torch)
    rules = [
        Rule(
            f"{htsat}spectrogram_extractor.stft.conv_real.weight",
            "audio_frontend.stft_real",
            **stft,
        ),
        Rule(
            f"{htsat}spectrogram_extractor.stft.conv_imag.weight",
            "audio_frontend.stft_imag",
            **stft,
        ),
        Rule(f"{htsat}logmel_extractor.melW", "audio_frontend.mel_filters"),
        *_msclap_htsat_rules(htsat, "audio_encoder."),
        Rule("logit_scale", "logit_scale"),
    ]
    for tower, ours in (
        ("audio_encoder", "audio_projection"),
        ("caption_encoder", "text_projection"),
    ):
        rules += _linear(f"{tower}.projection.linear1", f"{ours}.linear1", bias=False)
        rules += _linear(f"{tower}.projection.linear2", f"{ours}.linear2", bias=False)
        rules += _norm(f"{tower}.projection.layer_norm", f"{ours}.layer_norm")
    gpt2 = gpt2_keymap(prefix="caption_encoder.base.").nest("text_encoder.")
    ignore = msclap_htsat_ignore(htsat) + tuple(
        p for p in gpt2.ignore if p.startswith("caption_encoder.")
    )
    return KeyMap(tuple(rules) + gpt2.rules, ignore=ignore)


def _hf_htsat_rules(src: str, dst: str) -> list[Rule | Concat]:
    """transformers' ClapAudioEncoder (prefix `src`) -> our HTSAT (prefix `dst`)."""
    block, bdst = f"{src}layers.*.blocks.*.", f"{dst}layers.*.blocks.*."
    down, ddst = f"{src}layers.*.downsample.", f"{dst}layers.*.downsample."
    qkv = [f"{block}attention.self.{name}" for name in ("query", "key", "value")]
    fusion, fdst = f"{src}patch_embed.fusion_model.", f"{dst}patch_embed.fusion."
    conv1x1 = dict(transform=conv1x1_to_flax, inverse=conv1x1_to_torch)
    rules = [
        *_batch_norm(f"{src}batch_norm", f"{dst}bn0"),
        Rule(f"{src}patch_embed.proj.weight", f"{dst}patch_embed.kernel", **CONV),
        Rule(f"{src}patch_embed.proj.bias", f"{dst}patch_embed.bias"),
        *_norm(f"{src}patch_embed.norm", f"{dst}patch_embed.norm"),
        *_norm(f"{block}layernorm_before", f"{bdst}norm1"),
        Concat(tuple(f"{q}.weight" for q in qkv), f"{bdst}attn.qkv.kernel", transform=transpose),
        Concat(tuple(f"{q}.bias" for q in qkv), f"{bdst}attn.qkv.bias"),
        Rule(
            f"{block}attention.self.relative_position_bias_table",
            f"{bdst}attn.relative_position_bias_table",
        ),
        *_linear(f"{block}attention.output.dense", f"{bdst}attn.proj"),
        *_norm(f"{block}layernorm_after", f"{bdst}norm2"),
        *_linear(f"{block}intermediate.dense", f"{bdst}mlp.fc1"),
        *_linear(f"{block}output.dense", f"{bdst}mlp.fc2"),
        *_norm(f"{down}norm", f"{ddst}norm"),
        *_linear(f"{down}reduction", f"{ddst}reduction", bias=False),
        *_norm(f"{src}norm", f"{dst}norm"),
        # fused models only
        Rule(f"{src}patch_embed.mel_conv2d.weight", f"{dst}patch_embed.mel_kernel", **CONV),
        Rule(f"{src}patch_embed.mel_conv2d.bias", f"{dst}patch_embed.mel_bias"),
    ]
    # nn.Sequential indices: local_att = conv, bn, relu, conv, bn; global_att = pool + the same
    for branch, first in (("local_att", 0), ("global_att", 1)):
        for offset, ours in ((0, "conv1"), (3, "conv2")):
            torch_name, flax_name = f"{fusion}{branch}.{first + offset}", f"{fdst}{branch}.{ours}"
            rules += [
                Rule(f"{torch_name}.weight", f"{flax_name}.kernel", **conv1x1),
                Rule(f"{torch_name}.bias", f"{flax_name}.bias"),
            ]
        for offset, ours in ((1, "bn1"), (4, "bn2")):
            rules += _batch_norm(f"{fusion}{branch}.{first + offset}", f"{fdst}{branch}.{ours}")
    return rules


def _hf_roberta_rules(src: str, dst: str) -> list[Rule]:
    """transformers' ClapTextModel / RobertaModel (prefix `src`) -> our RoBERTa (prefix `dst`)."""
    layer, ldst = f"{src}encoder.layer.*.", f"{dst}layers.*."
    rules = [
        Rule(f"{src}embeddings.{name}.weight", f"{dst}{name}.embedding")
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    rules += _norm(f"{src}embeddings.LayerNorm", f"{dst}embeddings_norm")
    for name in ("query", "key", "value"):
        rules += _linear(f"{layer}attention.self.{name}", f"{ldst}attention.{name}")
    rules += [
        *_linear(f"{layer}attention.output.dense", f"{ldst}attention.output"),
        *_norm(f"{layer}attention.output.LayerNorm", f"{ldst}attention_norm"),
        *_linear(f"{layer}intermediate.dense", f"{ldst}intermediate"),
        *_linear(f"{layer}output.dense", f"{ldst}output"),
        *_norm(f"{layer}output.LayerNorm", f"{ldst}output_norm"),
        *_linear(f"{src}pooler.dense", f"{dst}pooler"),
    ]
    return rules


def hf_keymap() -> KeyMap:
    """transformers `ClapModel` (fused or not) <-> `CLAP` of the LAION family, both directions."""
    audio = "audio_model.audio_encoder."
    rules = [
        *_hf_roberta_rules("text_model.", "text_encoder."),
        *_hf_htsat_rules(audio, "audio_encoder."),
        Rule("logit_scale_a", "logit_scale_a"),
        Rule("logit_scale_t", "logit_scale_t"),
    ]
    for tower in ("audio_projection", "text_projection"):
        rules += _linear(f"{tower}.linear1", f"{tower}.linear1") + _linear(
            f"{tower}.linear2", f"{tower}.linear2"
        )
    fusion = f"{audio}patch_embed.fusion_model."
    ignore = (
        "text_model.embeddings.position_ids",
        "text_model.embeddings.token_type_ids",
        f"{audio}layers.*.blocks.*.attention.self.relative_position_index",
        f"{audio}batch_norm.num_batches_tracked",
        f"{fusion}local_att.*.num_batches_tracked",
        f"{fusion}global_att.*.num_batches_tracked",
    )
    return KeyMap(tuple(rules), ignore=ignore)


# ---------------------------------------------------------------------------------------------


def _torch_name(keymap: KeyMap, flax_key: str) -> str:
    for rule in keymap.rules:
        name = rule.match(flax_key, to_flax=False)
        if name is not None:
            return name
    return flax_key


@functools.lru_cache(maxsize=8)
def expected_shapes(config: ClapConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in flat_params(abstract_clap(config), STATE_KINDS).items()}


def msclap_to_flax(
    tensors: Mapping[str, np.ndarray],
    config: ClapConfig = ClapConfig(),
    *,
    source: str = "state dict",
) -> dict[str, np.ndarray]:
    """msclap state dict (numpy) -> our flat params, checked against `config`."""
    return _to_flax(msclap_keymap(), tensors, config, source)


def flax_to_msclap(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat params -> msclap state dict (parameters and bn0 statistics; no buffers)."""
    return msclap_keymap().to_torch(params)


def hf_to_flax(
    tensors: Mapping[str, np.ndarray], config: ClapConfig, *, source: str = "state dict"
) -> dict[str, np.ndarray]:
    """transformers `ClapModel` state dict (numpy) -> our flat params, checked against `config`."""
    return _to_flax(hf_keymap(), tensors, config, source)


def _to_flax(
    keymap: KeyMap, tensors: Mapping[str, np.ndarray], config: ClapConfig, source: str
) -> dict[str, np.ndarray]:
    params = keymap.to_flax(tensors, source)
    check_arrays(
        expected_shapes(config), params, source, display=lambda key: _torch_name(keymap, key)
    )
    return params


def flax_to_hf(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat LAION params -> transformers `ClapModel` state dict (no buffers)."""
    return hf_keymap().to_torch(params)


def htsat_from_msclap_state(
    tensors: Mapping[str, np.ndarray],
    config: HTSATConfig = HTSATConfig(),
    *,
    prefix: str = "audio_encoder.base.htsat.",
    source: str = "state dict",
    **dtypes,
) -> HTSAT:
    """Our HTSAT from the tensors under `prefix` of an msclap state dict (front end skipped)."""
    keymap = msclap_htsat_keymap(prefix)
    params = keymap.to_flax({k: v for k, v in tensors.items() if k.startswith(prefix)}, source)
    return load_params(
        nnx.eval_shape(lambda: HTSAT(config, rngs=nnx.Rngs(0), **dtypes)),
        params,
        source,
        STATE_KINDS,
    )


def from_msclap_state(
    tensors: Mapping[str, np.ndarray],
    config: ClapConfig = ClapConfig(),
    *,
    source: str = "state dict",
    **dtypes,
) -> CLAP:
    """A ready CLAP from an msclap state dict (numpy arrays, e.g. `torch_state(reference)`)."""
    return build_clap(
        config, msclap_to_flax(tensors, config, source=source), source=source, **dtypes
    )


def read_msclap_pth(path: str | Path) -> dict[str, np.ndarray]:
    """The "model" state dict of an msclap .pth, as float32 numpy arrays (weights_only load)."""
    return read_torch_state(path, key="model", dtype=np.float32)


def import_msclap(
    pth_path: str | Path,
    out_dir: str | Path,
    config: ClapConfig = ClapConfig(),
    *,
    command: str = COMMAND,
    overwrite: bool = False,
) -> None:
    """msclap `CLAP_weights_2023.pth` -> mats_jax checkpoint folder (family clap-msclap-2023).
    An existing `out_dir` is refused before anything is read, unless it is a previous output of
    `command` and `overwrite` is true (see `mats_jax.runtime.fileio.atomic_directory`)."""
    check_directory(out_dir, command=command, overwrite=overwrite)
    tensors = read_msclap_pth(pth_path)
    params = msclap_to_flax(tensors, config, source=str(pth_path))
    store.save_model(
        out_dir,
        family=MSCLAP_2023,
        config=config.to_dict(),
        params=params,
        command=command,
        overwrite=overwrite,
    )


def from_hf_state(
    tensors: Mapping[str, np.ndarray], config: ClapConfig, *, source: str = "state dict", **dtypes
) -> CLAP:
    """A ready LAION CLAP from a transformers `ClapModel` state dict (numpy arrays)."""
    return build_clap(config, hf_to_flax(tensors, config, source=source), source=source, **dtypes)


def read_hf_clap(folder: str | Path) -> tuple[ClapConfig, dict[str, np.ndarray]]:
    """(our config, float32 tensors) of a transformers `ClapModel` folder."""
    folder = Path(folder)
    hf_config, tensors = read_hf_folder(folder)
    preprocessor = None
    if (folder / "preprocessor_config.json").is_file():
        try:
            preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
        except ValueError as e:
            raise ModelFileError(
                f"{folder / 'preprocessor_config.json'}: not readable JSON ({e})"
            ) from None
    try:
        config = ClapConfig.from_hf(hf_config, preprocessor)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{folder}: unsupported CLAP config ({e})") from None
    return config, tensors


def import_hf(
    folder: str | Path, out_dir: str | Path, *, command: str = COMMAND, overwrite: bool = False
) -> None:
    """transformers `ClapModel` folder (LAION-CLAP) -> mats_jax checkpoint folder (family
    clap-laion). An existing `out_dir` is refused as in `import_msclap`.
    """
    check_directory(out_dir, command=command, overwrite=overwrite)
    config, tensors = read_hf_clap(folder)
    params = hf_to_flax(tensors, config, source=str(folder))
    store.save_model(
        out_dir,
        family=LAION,
        config=config.to_dict(),
        params=params,
        command=command,
        overwrite=overwrite,
    )


# (source, out, *, overwrite=False) -> None, by `--from` format
IMPORTERS: dict[str, Callable[..., None]] = {"msclap": import_msclap, "hf": import_hf}
