"""A workdir as everything after the trainer reads it: weights without an optimiser, and a
config.json from before the schema had a version."""

import json
import shutil

import jax
import numpy as np

from mats_jax.inference.listener import Listener
from mats_jax.mats.build import abstract_mats
from mats_jax.training import steps, workdir


def flat(state) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, path)): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(state)[0]
    }


def test_weights_restore_without_an_optimiser(listening_workdir):
    config = workdir.read_config(listening_workdir)
    _, trainable, rngs, _ = steps.split(abstract_mats(config))
    step, restored, _ = workdir.restore_weights(listening_workdir, config, None, trainable, rngs)
    assert step == 2
    listener = Listener.from_workdir(listening_workdir, load_clap=False)
    _, expected, _, _ = steps.split(listener.model)
    ours, theirs = flat(restored), flat(expected)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_a_workdir_written_before_config_versions_still_loads(listening_workdir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(listening_workdir, old)
    config = json.loads((old / "config.json").read_text())
    del config["config_version"], config["llm"]["architecture"]
    del config["data"]["packed_length"], config["data"]["max_per_row"]
    (old / "config.json").write_text(json.dumps(config))
    listener = Listener.from_workdir(old, load_clap=False)
    reference = Listener.from_workdir(listening_workdir, load_clap=False)
    assert listener.step == reference.step == 2
    embeddings = np.random.default_rng(0).standard_normal((2, 1024)).astype(np.float32)
    assert listener.describe(embeddings, santa=False) == reference.describe(embeddings, santa=False)
