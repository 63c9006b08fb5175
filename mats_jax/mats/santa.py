"""Santa: pull an audio embedding toward the CLAP *text* embeddings the model was trained on.

MATS trains its mapper on text embeddings only, so at inference an audio embedding sits off the
training distribution (the modality gap). Santa (docs/architecture.md) mixes it with nearby
training texts: a memory bank of ~5k L2-normalised text embeddings is clustered once by k-means;
per audio
embedding a we take the nearest centre, the `top_l` nearest members of that cluster (padded by
repeating the cluster's first member when it is smaller), perturb them with the training noise,
weight them by softmax(temperature·⟨a, t_k⟩) and return mix·a + (1−mix)·Σ w_k t_k. The caller
normalises and maps the result (the mapper normalises its input anyway).

Variants: "original" (the released code) uses the raw audio embedding a everywhere; "paper" (the
paper's formula) L2-normalises a first. Everything runs for the whole batch at once under jit;
only the reads of each cluster's members are laid out per backend (`default_member_batch`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from mats_jax.models.layers import l2_normalize
from mats_jax.runtime.fileio import MARKER, atomic_directory, check_directory

ARRAYS, INFO = "bank.npz", "bank.json"
BANK_COMMAND = "memory_bank"  # the marker of the folders `MemoryBank.save` writes
VARIANTS = ("original", "paper")


# Full float32 products: GPUs would otherwise round matmul inputs to TF32 (and TPUs to bf16),
# enough to change which centre or member is nearest; these products are small.
EXACT = jax.lax.Precision.HIGHEST


def _squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """||x_i − y_j||² [N, M] by one matmul (the form that shards and runs on the MXU)."""
    return (
        jnp.sum(x * x, -1)[:, None]
        - 2.0 * jnp.matmul(x, y.T, precision=EXACT)
        + jnp.sum(y * y, -1)[None, :]
    )


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def kmeans(x: jax.Array, k: int, iterations: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means: (centres [k, D], assignments [N] to the final centres).

    Initialised from k distinct random samples; a cluster that becomes empty keeps its centre.
    Per-cluster sums are a one-hot matmul, so with x sharded over its rows (centres replicated)
    they become an all-reduce and each device only touches its own points; the replicated
    outputs are spelled out, which explicit-sharding meshes require and auto meshes accept.
    """
    n = x.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"k-means needs 0 < k <= N, got k={k}, N={n}")
    x = x.astype(jnp.float32)
    replicated = jax.typeof(x).sharding.update(spec=PartitionSpec())
    centres = x.at[jax.random.choice(key, n, (k,), replace=False)].get(out_sharding=replicated)

    def assign(centres: jax.Array) -> jax.Array:
        return jnp.argmin(_squared_distances(x, centres), axis=1)

    def update(_, centres: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(assign(centres), k, dtype=x.dtype)
        counts = one_hot.sum(0)[:, None]
        sums = jnp.matmul(one_hot.T, x, precision=EXACT, out_sharding=replicated)
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), centres)

    centres = jax.lax.fori_loop(0, iterations, update, centres)
    return centres, assign(centres)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("embeddings", "centres", "members", "counts"),
    meta_fields=(),
)
@dataclasses.dataclass(frozen=True)
class MemoryBank:
    """The clustered text embeddings Santa retrieves from.

    embeddings [N, D]: L2-normalised CLAP text embeddings. centres [K, D]: k-means centres.
    members [K, L_max]: each cluster's member indices in bank order, padded by repeating the
    cluster's first member (row of zeros for an empty cluster). counts [K]: real members per row.
    """

    embeddings: jax.Array
    centres: jax.Array
    members: jax.Array
    counts: jax.Array

    def save(
        self, folder: str | Path, info: Mapping[str, Any] | None = None, *, overwrite: bool = False
    ) -> None:
        """Writes `bank.npz` and `bank.json` (shapes + `info`); the folder appears atomically.
        An existing bank is replaced only with `overwrite`; any other folder never is (see
        `check_bank_folder`)."""
        with atomic_directory(folder, **_bank_output(overwrite)) as tmp:
            arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
            np.savez(tmp / ARRAYS, **arrays)
            meta = {"shapes": {name: list(a.shape) for name, a in arrays.items()}, **(info or {})}
            (tmp / INFO).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> MemoryBank:
        path = Path(folder) / ARRAYS
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: build it with python -m mats_jax.memory_bank"
            )
        with np.load(path) as data:
            return cls(**{f.name: jnp.asarray(data[f.name]) for f in dataclasses.fields(cls)})


def bank_texts(folder: str | Path) -> list[str]:
    """The texts of a bank's rows, in bank order, as `python -m mats_jax.memory_bank` records them
    in bank.json (empty for a bank saved without them)."""
    info = Path(folder) / INFO
    return json.loads(info.read_text()).get("texts", []) if info.is_file() else []


def check_bank_folder(folder: str | Path, *, overwrite: bool = False) -> None:
    """Raises FileExistsError unless `MemoryBank.save` may write `folder`: free, empty, or (with
    overwrite) a bank saved before."""
    check_directory(folder, **_bank_output(overwrite))


def is_bank_folder(folder: Path) -> bool:
    """Whether `folder` holds a bank and nothing else (one saved before outputs were marked)."""
    names = {p.name for p in folder.iterdir()} - {MARKER}
    return ARRAYS in names and names <= {ARRAYS, INFO}


def _bank_output(overwrite: bool) -> dict:
    return dict(
        command=BANK_COMMAND,
        overwrite=overwrite,
        recognise=is_bank_folder,
        hint="move it away or choose another --workdir",
    )


def member_table(assignments: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(members [k, L_max] int32, counts [k] int32) from cluster assignments (see MemoryBank)."""
    assignments = np.asarray(assignments)
    counts = np.bincount(assignments, minlength=k).astype(np.int32)
    members = np.zeros((k, max(int(counts.max()), 1)), np.int32)
    for c in range(k):
        own = np.flatnonzero(assignments == c)
        if own.size:
            members[c] = own[0]
            members[c, : own.size] = own
    return members, counts


def build_bank(embeddings: jax.Array, clusters: int, iterations: int, key: jax.Array) -> MemoryBank:
    """L2-normalises the text embeddings, clusters them, and tabulates each cluster's members."""
    embeddings = l2_normalize(jnp.asarray(embeddings, jnp.float32))
    centres, assignments = kmeans(embeddings, clusters, iterations, key)
    members, counts = member_table(np.asarray(assignments), clusters)
    return MemoryBank(embeddings, centres, jnp.asarray(members), jnp.asarray(counts))


# On an accelerator, embeddings that read their cluster's members together: a [64, W, D] gather
# stays under 0.6 GB on a 100k bank (W ~ 2k), and on an H100 it ran as fast as the whole batch of
# 256 (68x against 65x the per-sample original on a 100k bank, 115x against 141x on 5k).
ACCELERATOR_MEMBER_BATCH = 64


def default_member_batch(batch: int) -> int:
    """How many audio embeddings read their cluster's members at once: one at a time on a CPU
    (a cluster's [W, D] rows stay in cache), up to ACCELERATOR_MEMBER_BATCH on an accelerator
    (wide gather-and-reduces instead of B small sequential steps, which are launch-bound)."""
    return 1 if jax.default_backend() == "cpu" else min(batch, ACCELERATOR_MEMBER_BATCH)


@functools.partial(jax.jit, static_argnames=("variant", "member_batch"))
def retrieve_with_noise(
    bank: MemoryBank,
    audio: jax.Array,
    noise: jax.Array,
    *,
    temperature: float = 10.0,
    mix: float = 0.7,
    noise_variance: float = 0.015,
    variant: str = "original",
    member_batch: int | None = None,
) -> jax.Array:
    """Santa for a batch [B, D] with the standard-normal noise [B, top_l, D] given (top_l from it).
    `member_batch` (default: `default_member_batch`) only trades speed for memory."""
    a = _santa_input(audio, variant)
    _, picked = _nearest_members(bank, a, noise.shape[1], member_batch)
    return _mix_with_perturbed(
        a,
        bank.embeddings[picked],  # unit rows
        noise,
        temperature=temperature,
        mix=mix,
        noise_variance=noise_variance,
    )


@functools.partial(jax.jit, static_argnames=("top_l", "variant"))
def explain_retrieval(
    bank: MemoryBank,
    audio: jax.Array,
    *,
    key: jax.Array,
    top_l: int = 32,
    temperature: float = 10.0,
    noise_variance: float = 0.015,
    variant: str = "original",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What `retrieve` with the same arguments mixes in, so that a person can see it: (nearest
    cluster [B], the bank rows picked [B, top_l], their softmax weights [B, top_l]). The weights
    are those of the noise-perturbed texts, from the same noise draws as `retrieve`."""
    a = _santa_input(audio, variant)
    cluster, picked = _nearest_members(bank, a, top_l, None)
    x, noise = bank.embeddings[picked], _retrieval_noise(key, audio, top_l)
    dots, _ = _perturbed_dots(a, x, noise, jnp.sqrt(noise_variance))
    return cluster, picked, jax.nn.softmax(temperature * dots, axis=-1)


def _santa_input(audio: jax.Array, variant: str) -> jax.Array:
    """The audio embedding as the variant uses it: raw ("original") or unit ("paper")."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    a = audio.astype(jnp.float32)
    return l2_normalize(a) if variant == "paper" else a


def _retrieval_noise(key: jax.Array, audio: jax.Array, top_l: int) -> jax.Array:
    """The standard-normal perturbation [B, top_l, D] of the retrieved texts."""
    return jax.random.normal(key, (audio.shape[0], top_l, audio.shape[1]))


def _nearest_members(
    bank: MemoryBank, a: jax.Array, top_l: int, member_batch: int | None
) -> tuple[jax.Array, jax.Array]:
    """(nearest non-empty cluster [B], its top_l members nearest to a [B, top_l]), padded by
    the cluster's first member when it has fewer."""
    # nearest non-empty centre (an empty cluster kept its centre but has nobody to retrieve)
    to_centres = jnp.where(bank.counts[None, :] > 0, _squared_distances(a, bank.centres), jnp.inf)
    cluster = jnp.argmin(to_centres, axis=1)
    members = bank.members[cluster]  # [B, L_max]
    if members.shape[1] < top_l:  # room for top_l picks; the extra slots are padding
        members = jnp.concatenate(
            [members, jnp.repeat(members[:, :1], top_l - members.shape[1], 1)], 1
        )

    def member_distances(a_and_members: tuple[jax.Array, jax.Array]) -> jax.Array:
        """||t||² − 2⟨a, t⟩ for one cluster's texts [W] (||a − t||² less ||a||²), reading only
        that cluster's rows."""
        one, own = a_and_members
        rows = bank.embeddings[own]
        return jnp.sum(rows * (rows - 2.0 * one), -1)  # ||t||² − 2⟨a, t⟩ in one fused pass

    member_batch = member_batch or default_member_batch(a.shape[0])
    if member_batch == 1:
        # cluster by cluster, so that a cluster's rows are still in cache for the next embedding
        # (lax.map without batch_size: a batch of 1 would be a slower batched gather)
        visit = jnp.argsort(cluster)
        distances = jax.lax.map(member_distances, (a[visit], members[visit]))
        distances = jnp.zeros_like(distances).at[visit].set(distances)
    else:
        distances = jax.lax.map(member_distances, (a, members), batch_size=member_batch)
    to_members = jnp.sum(a * a, -1)[:, None] + distances
    count = bank.counts[cluster][:, None]
    is_member = jnp.arange(members.shape[1])[None, :] < count
    _, order = jax.lax.top_k(jnp.where(is_member, -to_members, -jnp.inf), top_l)
    picked = jnp.take_along_axis(members, order, axis=1)
    # a cluster smaller than top_l: all its members, then its first member repeated
    picked = jnp.where(jnp.arange(top_l)[None, :] < count, picked, members[:, :1])
    return cluster, picked


def _mix_with_perturbed(
    a: jax.Array,
    x: jax.Array,
    noise: jax.Array,
    *,
    temperature: float,
    mix: float,
    noise_variance: float,
) -> jax.Array:
    """mix·a + (1−mix)·Σ_l w_l t_l with t_l = perturb(x_l) = (x_l + s·n_l) / ‖x_l + s·n_l‖,
    w = softmax(temperature·⟨a, t_l⟩), for unit x_l, without materialising t [B, L, D]:
    ‖x + s·n‖² = 1 + 2s⟨x, n⟩ + s²‖n‖², and ⟨a, t⟩ and Σ w t follow from the same dot products.
    Only reductions over x and n remain (a few reads, no [B, L, D] writes)."""
    s = jnp.sqrt(noise_variance)
    dots, norm = _perturbed_dots(a, x, noise, s)
    scale = jax.nn.softmax(temperature * dots, axis=-1) / norm
    texts = jnp.einsum("bl,bld->bd", scale, x, precision=EXACT) + s * jnp.einsum(
        "bl,bld->bd", scale, noise, precision=EXACT
    )
    return mix * a + (1.0 - mix) * texts


def _perturbed_dots(
    a: jax.Array, x: jax.Array, noise: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(⟨a, t_l⟩, ‖x_l + s·n_l‖) [B, L] for t_l = (x_l + s·n_l) / ‖x_l + s·n_l‖ and unit x_l."""
    norm = jnp.sqrt(
        1.0
        + 2.0 * s * jnp.einsum("bld,bld->bl", x, noise, precision=EXACT)
        + s * s * jnp.einsum("bld,bld->bl", noise, noise, precision=EXACT)
    )
    dots = (
        jnp.einsum("bd,bld->bl", a, x, precision=EXACT)
        + s * jnp.einsum("bd,bld->bl", a, noise, precision=EXACT)
    ) / norm
    return dots, norm


@functools.partial(jax.jit, static_argnames=("top_l", "variant"))
def retrieve(
    bank: MemoryBank,
    audio: jax.Array,
    *,
    key: jax.Array,
    top_l: int = 32,
    temperature: float = 10.0,
    mix: float = 0.7,
    noise_variance: float = 0.015,
    variant: str = "original",
) -> jax.Array:
    """Santa-mixed embeddings [B, D] for audio embeddings [B, D]; see the module docstring."""
    return retrieve_with_noise(
        bank,
        audio,
        _retrieval_noise(key, audio, top_l),
        temperature=temperature,
        mix=mix,
        noise_variance=noise_variance,
        variant=variant,
    )


def maybe_retrieve(bank: MemoryBank | None, audio: jax.Array, **kwargs: Any) -> jax.Array:
    """`retrieve` with a bank, the audio embeddings unchanged without one (Santa off)."""
    return audio if bank is None else retrieve(bank, audio, **kwargs)
