"""Santa (DESIGN §2.5) against direct NumPy implementations written here, loops and all."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mats_jax.mats.model import inject_noise, perturb
from mats_jax.mats.santa import (
    MemoryBank,
    build_bank,
    explain_retrieval,
    kmeans,
    maybe_retrieve,
    member_table,
    retrieve,
    retrieve_with_noise,
)
from mats_jax.runtime.fileio import MARKER
from tests.support.outputs import fake_workdir, marker_command, other_files, snapshot
from tests.support.paths import ROOT


def normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lloyd(x, centres, iterations):
    """Textbook Lloyd in float64: assign to the nearest centre, move each non-empty centre to its
    mean."""
    x, centres = x.astype(np.float64), centres.astype(np.float64).copy()

    def assign(c):
        return np.array([np.argmin([np.sum((p - q) ** 2) for q in c]) for p in x])

    for _ in range(iterations):
        labels = assign(centres)
        for j in range(len(centres)):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(0)
    return centres, assign(centres)


def santa_reference(
    embeddings, centres, clusters, audio, noise, *, top_l, temperature, mix, variance, variant
):
    """DESIGN §2.5 per audio embedding; `clusters` lists each cluster's members in bank order."""
    out = []
    for a, eps in zip(audio.astype(np.float64), noise.astype(np.float64)):
        if variant == "paper":
            a = a / np.linalg.norm(a)
        candidates = [c for c in range(len(centres)) if clusters[c]]  # empty clusters hold nobody
        c = min(candidates, key=lambda c: np.sum((a - centres[c]) ** 2))
        own = clusters[c]
        by_distance = sorted(own, key=lambda i: np.sum((a - embeddings[i]) ** 2))
        picked = by_distance[:top_l] + [own[0]] * (top_l - len(own))
        t = normalise(normalise(embeddings[picked]) + np.sqrt(variance) * eps)
        logits = temperature * t @ a
        w = np.exp(logits - logits.max())
        out.append(mix * a + (1 - mix) * (w / w.sum()) @ t)
    return np.stack(out)


@pytest.fixture(scope="module")
def fixed_bank():
    """A bank with fixed centres, cluster sizes 2, 5, 9, 14 and one empty cluster."""
    rng = np.random.default_rng(1)
    dim, sizes = 16, [2, 5, 0, 9, 14]
    centres = rng.normal(size=(len(sizes), dim)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    embeddings = normalise(centres[labels] + 0.6 * rng.normal(size=(len(labels), dim))).astype(
        np.float32
    )
    members, counts = member_table(labels, len(sizes))
    clusters = [list(np.flatnonzero(labels == c)) for c in range(len(sizes))]
    bank = MemoryBank(
        jnp.asarray(embeddings), jnp.asarray(centres), jnp.asarray(members), jnp.asarray(counts)
    )
    # raw (unnormalised) audio embeddings near each centre, the empty cluster's included
    audio = (2.5 * (centres + 0.3 * rng.normal(size=centres.shape))).astype(np.float32)
    audio = np.concatenate([audio, rng.normal(size=(2, dim)).astype(np.float32)])
    return bank, clusters, audio


@pytest.mark.parametrize("variant", ["original", "paper"])
@pytest.mark.parametrize("top_l", [4, 32], ids=["some-clusters-padded", "all-padded"])
@pytest.mark.parametrize(
    "member_batch", [1, 3, 7], ids=["cpu-default", "chunks-and-rest", "gpu-default"]
)
def test_retrieval_matches_the_reference(fixed_bank, variant, top_l, member_batch):
    bank, clusters, audio = fixed_bank
    assert len(audio) == 7
    noise = (
        np.random.default_rng(2).normal(size=(len(audio), top_l, audio.shape[1])).astype(np.float32)
    )
    settings = dict(temperature=10.0, mix=0.7)
    got = retrieve_with_noise(
        bank,
        jnp.asarray(audio),
        jnp.asarray(noise),
        noise_variance=0.015,
        variant=variant,
        member_batch=member_batch,
        **settings,
    )
    want = santa_reference(
        np.asarray(bank.embeddings),
        np.asarray(bank.centres),
        clusters,
        audio,
        noise,
        top_l=top_l,
        variance=0.015,
        variant=variant,
        **settings,
    )
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_retrieve_draws_the_training_noise(fixed_bank):
    bank, _, audio = fixed_bank
    key = jax.random.key(3)
    noise = jax.random.normal(key, (len(audio), 8, audio.shape[1]))
    np.testing.assert_allclose(
        retrieve(bank, audio, key=key, top_l=8), retrieve_with_noise(bank, audio, noise), atol=1e-6
    )
    x = jnp.asarray(audio)
    np.testing.assert_allclose(
        perturb(x, 0.015, jax.random.normal(key, x.shape)), inject_noise(x, 0.015, key), atol=1e-7
    )
    assert maybe_retrieve(None, x, key=key) is x


@pytest.mark.parametrize("variant", ["original", "paper"])
def test_explain_retrieval_shows_what_retrieve_mixes_in(fixed_bank, variant):
    """The nearest cluster, the members picked and their weights, recomputed here one embedding
    at a time, and mixing them by hand gives `retrieve`'s output (the same noise draws)."""
    bank, clusters, audio = fixed_bank
    key, top_l, variance = jax.random.key(4), 4, 0.015
    cluster, picked, weights = (
        np.asarray(v) for v in explain_retrieval(bank, audio, key=key, top_l=top_l, variant=variant)
    )
    embeddings = np.asarray(bank.embeddings, np.float64)
    centres = np.asarray(bank.centres, np.float64)
    noise = np.asarray(jax.random.normal(key, (len(audio), top_l, audio.shape[1])), np.float64)
    mixed = []
    for i, a in enumerate(audio.astype(np.float64)):
        if variant == "paper":
            a = a / np.linalg.norm(a)
        nonempty = [c for c in range(len(centres)) if clusters[c]]
        assert cluster[i] == min(nonempty, key=lambda c: np.sum((a - centres[c]) ** 2))
        own = clusters[cluster[i]]
        nearest = sorted(own, key=lambda j: np.sum((a - embeddings[j]) ** 2))[:top_l]
        assert list(picked[i]) == nearest + [own[0]] * (top_l - len(nearest))
        t = normalise(embeddings[picked[i]] + np.sqrt(variance) * noise[i])
        w = np.exp(10.0 * t @ a - np.max(10.0 * t @ a))
        np.testing.assert_allclose(weights[i], w / w.sum(), atol=1e-5)
        mixed.append(0.7 * a + 0.3 * weights[i] @ t)
    got = retrieve(bank, audio, key=key, top_l=top_l, variant=variant, noise_variance=variance)
    np.testing.assert_allclose(np.asarray(got), np.stack(mixed), atol=1e-5)


def test_member_table_pads_with_the_first_member():
    members, counts = member_table(np.array([2, 0, 2, 2, 0]), 4)
    np.testing.assert_array_equal(members, [[1, 4, 1], [0, 0, 0], [0, 2, 3], [0, 0, 0]])
    np.testing.assert_array_equal(counts, [2, 0, 3, 0])


def test_kmeans_matches_lloyd_from_the_same_init():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 8)) * 3)[rng.integers(0, 6, 300)] + rng.normal(size=(300, 8))
    x = jnp.asarray(x, jnp.float32)
    key = jax.random.key(0)
    init, _ = kmeans(x, 6, 0, key)  # zero iterations: the initial centres
    assert len({tuple(c) for c in np.asarray(init).tolist()}) == 6
    assert all(np.any(np.all(np.asarray(x) == c, axis=1)) for c in np.asarray(init))
    centres, labels = kmeans(x, 6, 10, key)
    want_centres, want_labels = lloyd(np.asarray(x), np.asarray(init), 10)
    np.testing.assert_array_equal(np.asarray(labels), want_labels)
    np.testing.assert_allclose(np.asarray(centres), want_centres, atol=1e-5)


def test_empty_clusters_keep_their_centre():
    # 3 distinct points, 5 clusters: two initial centres duplicate others and never win a point
    x = jnp.asarray(np.repeat(np.eye(3, 4, dtype=np.float32), 10, axis=0))
    key = jax.random.key(5)
    init, _ = kmeans(x, 5, 0, key)
    centres, labels = kmeans(x, 5, 3, key)
    want_centres, want_labels = lloyd(np.asarray(x), np.asarray(init), 3)
    np.testing.assert_array_equal(np.asarray(labels), want_labels)
    empty = np.bincount(np.asarray(labels), minlength=5) == 0
    assert empty.sum() == 2
    np.testing.assert_array_equal(np.asarray(centres)[empty], np.asarray(init)[empty])


def test_kmeans_on_points_sharded_over_devices():
    script = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from mats_jax.mats.santa import kmeans
x = jnp.asarray(np.random.default_rng(0).normal(size=(400, 8)), jnp.float32)
want_centres, want_labels = kmeans(x, 7, 5, jax.random.key(0))
for axis_type in (jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit):
    mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
    centres, labels = kmeans(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), 7, 5,
                             jax.random.key(0))
    assert len(labels.sharding.device_set) == 4
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(centres, want_centres, atol=1e-5)
"""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_save_load_round_trip(tmp_path):
    embeddings = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    bank = build_bank(embeddings, 4, 5, jax.random.key(0))
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, atol=1e-6)
    bank.save(tmp_path / "bank", {"texts": ["a", "b"]})
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        bank.save(tmp_path / "bank", {"texts": ["c"]})
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["texts"] == ["a", "b"]
    bank.save(tmp_path / "bank", {"texts": ["c"]}, overwrite=True)  # replacing an existing bank
    loaded = MemoryBank.load(tmp_path / "bank")
    for name in ("embeddings", "centres", "members", "counts"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(bank, name))
    info = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert info["texts"] == ["c"] and info["shapes"]["centres"] == [4, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]


@pytest.mark.parametrize("make", [other_files, fake_workdir], ids=["other-files", "workdir"])
def test_save_never_replaces_what_is_not_a_bank(tmp_path, make):
    bank = build_bank(np.eye(8, dtype=np.float32), 2, 2, jax.random.key(0))
    target = make(tmp_path / "memory_bank")
    before = snapshot(target)
    with pytest.raises(FileExistsError) as refused:
        bank.save(target, overwrite=True)
    assert str(refused.value) == (
        f"{target} exists and is not a previous `memory_bank` output; "
        "move it away or choose another --workdir"
    )
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory_bank"]


def test_save_replaces_a_bank_saved_before_outputs_were_marked(tmp_path):
    bank = build_bank(np.eye(8, dtype=np.float32), 2, 2, jax.random.key(0))
    bank.save(tmp_path / "bank", {"texts": ["old"]})
    assert marker_command(tmp_path / "bank") == "memory_bank"
    (tmp_path / "bank" / MARKER).unlink()  # as an older version left it
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        bank.save(tmp_path / "bank", {"texts": ["new"]})
    bank.save(tmp_path / "bank", {"texts": ["new"]}, overwrite=True)
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["texts"] == ["new"]
    assert marker_command(tmp_path / "bank") == "memory_bank"
