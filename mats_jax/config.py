"""The one run configuration of mats_jax: its fields and defaults, their checks, the typed views
the model is built from, and the versioned `config.json` a workdir keeps.

Every config in configs/ starts from `base()` (the paper's values where it gives them) and changes
what its run needs; `--config.train.lr=1e-4` overrides any field. Commands check what they use
(`check_values`, `check_layout`, `check_paths`) before any work, so a bad value is one line.
Generation, evaluation and export rebuild a run from its `config.json`: `write_json` stamps it
with `CONFIG_VERSION` and `read_json` migrates an older one on read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from jax.sharding import Mesh

from mats_jax.runtime.errors import InputError
from mats_jax.runtime.fileio import atomic_file
from mats_jax.runtime.sharding import BATCH_AXES, DEFAULT_RULES

CONFIG_VERSION = 4
"""1: written before the version existed (no `llm.architecture`); 2: no packing (those runs
trained one example per row: they read back with data.packed_length 0); 3: packed rows without a
bound on their targets (read back with data.max_targets_per_row 0); 4: this schema."""
_VERSION_KEY = "config_version"


class ConfigError(InputError):
    """A config value that cannot work, reported as one line before any work."""


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # "": the embedded SmolLM2. architecture: the HF config of the LLM when no checkpoint is at
    # hand (ahead-of-time compilation, importing trained weights); a checkpoint's own wins.
    c.llm = dict(checkpoint="", dtype="float32", param_dtype="float32", architecture={})
    # checkpoint "": random CLAP weights (said loudly). text_dropout: each train step embeds its
    # captions with the text tower in train mode (GPT-2's and the projection's dropouts), as the
    # original's `model.train()` does; off: the cached eval-mode embeddings. Validation: cached.
    c.clap = dict(checkpoint="", seed=0, dim=1024, text_dropout=False)
    c.mapper = dict(
        mapping_type="transformer",
        dim=1024,
        prefix_length=40,
        clip_length=40,
        num_layers=8,
        num_heads=8,
        mlp_ratio=2.0,
    )
    c.lora = dict(rank=8, alpha=32.0, dropout=0.1, targets=("q_proj", "v_proj"))
    c.noise_variance = 0.015
    # packed_length > 0: rows of that many positions holding several examples each (at most
    # max_per_row), and train.batch_size counts rows; 0: one example per row, its tail padded
    # to tail_length (the reference layout). tail_length bounds one example's tail either way.
    c.data = dict(
        corpus="",
        sources={"audiocaps": 1.0},
        val_source="audiocaps",
        seed=0,
        tail_length=200,
        max_answer_tokens=150,
        packed_length=512,
        max_per_row=8,  # examples of the real mixture take 65-111 positions: ~6 fill a row
        # the LM head runs on this many positions per row (those predicting an answer token or
        # EOS); the packer keeps every row within it. 0: on every position. At least one
        # example's most (max_answer_tokens + 1).
        max_targets_per_row=160,
    )
    c.train = dict(
        steps=360_000,
        batch_size=96,
        grad_accum=1,
        lr=3e-5,
        warmup_steps=3000,
        weight_decay=0.05,
        b1=0.9,
        b2=0.999,
        seed=0,
        remat=False,
        log_every=50,
        checkpoint_every=5000,
        keep_checkpoints=3,
        peak_flops_per_device=0.0,
        prng_impl="threefry2x32",  # "rbg": the accelerator's own generator (cheap dropout)
        profile_start=10,
        profile_steps=0,
        # a new run from another's trainable weights, fresh optimiser, step 0: a workdir (its
        # newest checkpoint), WORKDIR/checkpoints/STEP, or a `convert mats` import
        init_from="",
    )  # profile_steps > 0: a profiler trace in WORKDIR/tensorboard
    c.eval = dict(every=5000, batches=10, batch_size=16, samples=4, max_new_tokens=40)
    c.santa = dict(
        bank_size=5000,
        clusters=100,
        iterations=10,
        seed=0,
        top_l=32,
        temperature=10.0,
        mix=0.7,
        variant="original",
    )  # "paper": the normalised variant of the paper's formula
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = tuple(DEFAULT_RULES)
    return c


# ---- checks -----------------------------------------------------------------------------------

_AT_LEAST = {  # field: least value (integers)
    "train.steps": 1,
    "train.batch_size": 1,
    "train.grad_accum": 1,
    "train.log_every": 1,
    "train.checkpoint_every": 1,
    "train.keep_checkpoints": 1,
    "train.profile_start": 0,
    "train.profile_steps": 0,
    "eval.every": 1,
    "eval.batch_size": 1,
    "eval.batches": 0,
    "eval.samples": 0,
    "data.packed_length": 0,
    "data.max_per_row": 1,
    "data.max_targets_per_row": 0,
    "santa.bank_size": 1,
    "santa.clusters": 1,
    "santa.iterations": 0,
}


# The frozen LLM's compute and storage: bfloat16 on TPUs (configs/mats_llama.py), float16 as the
# original runs it on GPUs; trained parameters stay float32 either way.
LLM_DTYPES = ("float32", "bfloat16", "float16")


def _get(config: ml_collections.ConfigDict, name: str) -> Any:
    section, field = name.split(".")
    return config[section][field]


def check_values(config: ml_collections.ConfigDict) -> None:
    """Counts and intervals in range, and a mixture with something to draw from."""
    for name, least in _AT_LEAST.items():
        value = _get(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(config.clap.text_dropout, bool):
        raise ConfigError(
            f"clap.text_dropout must be true or false, got {config.clap.text_dropout!r}"
        )
    for name in ("llm.dtype", "llm.param_dtype"):
        if _get(config, name) not in LLM_DTYPES:
            raise ConfigError(
                f"{name} must be one of {', '.join(LLM_DTYPES)}, got {_get(config, name)!r}"
            )
    if not any(w > 0 for w in config.data.sources.values()):
        raise ConfigError(f"data.sources {dict(config.data.sources)} has no positive weight")
    d = config.data
    most = min(d.max_answer_tokens + 1, d.tail_length)  # one example's targets at most
    if d.packed_length and d.max_targets_per_row and d.max_targets_per_row < most:
        raise ConfigError(
            f"data.max_targets_per_row {d.max_targets_per_row} is less than one example's "
            f"targets can be (min(data.max_answer_tokens + 1, data.tail_length) = {most})"
        )


def targets_per_row(data: ml_collections.ConfigDict) -> int:
    """The positions per packed row the LM head runs on (`data.max_targets_per_row`, at most the
    row; 0 means the whole row)."""
    return min(data.max_targets_per_row or data.packed_length, data.packed_length)


def check_layout(
    config: ml_collections.ConfigDict, mesh: Mesh, generate_batch: int | None = None
) -> None:
    """Every batch splits over the mesh's data axes: train micro-batches, eval batches and (for
    ahead-of-time compilation) a generate batch."""
    t = config.train
    if t.batch_size % t.grad_accum:
        raise ConfigError(
            f"train.batch_size {t.batch_size} is not divisible by train.grad_accum {t.grad_accum}"
        )
    ways = 1
    for axis in BATCH_AXES:
        ways *= mesh.shape[axis]
    micro = t.batch_size // t.grad_accum
    if micro % ways:
        raise ConfigError(
            f"micro-batch {micro} (train.batch_size / train.grad_accum) is not divisible "
            f"by the data axes data×fsdp = {ways}"
        )
    if config.eval.batch_size % ways:
        raise ConfigError(
            f"eval.batch_size {config.eval.batch_size} is not divisible by data×fsdp = {ways}"
        )
    if generate_batch is not None and generate_batch % ways:
        raise ConfigError(f"generate batch {generate_batch} does not split over data×fsdp = {ways}")


def check_paths(
    config: ml_collections.ConfigDict,
    names: Sequence[str] = ("llm.checkpoint", "clap.checkpoint", "data.corpus"),
) -> None:
    """The named paths, where given, exist."""
    for name in names:
        value = _get(config, name)
        if value and not Path(value).exists():
            raise ConfigError(f"{name}: {value} does not exist")


# ---- typed views ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MapperConfig:
    mapping_type: str = "transformer"  # or "mlp"
    clap_dim: int = 1024
    dim: int = 1024
    prefix_length: int = 40
    clip_length: int = 40
    num_layers: int = 8
    num_heads: int = 8
    mlp_ratio: float = 2.0


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class MATSConfig:
    mapper: MapperConfig = MapperConfig()
    lora: LoraConfig = LoraConfig()
    noise_variance: float = 0.015


def dataclass_fields(cls: type, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`values` as keyword arguments of the dataclass `cls` (a model config read back from a
    file); ValueError naming any field `cls` does not have."""
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} config fields {sorted(unknown)}")
    return dict(values)


def mats_config(config: ml_collections.ConfigDict) -> MATSConfig:
    """The model's view of a run config: mapper (its input is CLAP's `clap.dim`), LoRA, noise."""
    mapper = MapperConfig(clap_dim=config.clap.dim, **config.mapper.to_dict())
    lora = LoraConfig(**{**config.lora.to_dict(), "targets": tuple(config.lora.targets)})
    return MATSConfig(mapper=mapper, lora=lora, noise_variance=config.noise_variance)


# ---- config.json ------------------------------------------------------------------------------


def json_text(config: ml_collections.ConfigDict) -> str:
    """The run's config as config.json holds it: stamped with CONFIG_VERSION."""
    values = json.loads(config.to_json_best_effort())
    return json.dumps({_VERSION_KEY: CONFIG_VERSION, **values}, indent=2) + "\n"


def write_json(config: ml_collections.ConfigDict, path: Path) -> None:
    """Writes (or rewrites: a resumed run writes its config again) a run's config.json."""
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json_text(config))


def read_json(path: Path) -> ml_collections.ConfigDict:
    """A workdir's config.json as a config, migrated to this schema: fields added since it was
    written take their defaults."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing, not a training workdir") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    version = values.pop(_VERSION_KEY, 1)
    if isinstance(version, int) and isinstance(values.get("data"), dict):
        if version < 3:
            values["data"].setdefault("packed_length", 0)
        if version < 4:
            values["data"].setdefault("max_targets_per_row", 0)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"{path}: config_version {version!r} is newer than this mats_jax "
            f"({CONFIG_VERSION}); upgrade mats_jax to read it"
        )
    return ml_collections.ConfigDict(_with_defaults(base().to_dict(), values))


def _with_defaults(defaults: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every section and field of `defaults` it lacks filled in (fields that are
    mappings themselves, such as data.sources, are values: they are not merged)."""
    merged = dict(values)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(default, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = {**default, **merged[key]}
    return merged
