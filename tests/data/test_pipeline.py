"""Reading: per-process shards of each batch, mixing ratios, deterministic shuffling, resumable
iterator state."""

import collections
import json

import orbax.checkpoint as ocp
import pytest

from mats_jax.data.pipeline import all_records, first_records, make_iterator
from tests.support.records import SIZES, synthetic_records

WEIGHTS = {"alpha": 5, "beta": 3, "gamma": 2}


def iterator(corpus, **kwargs):
    args = dict(sources=WEIGHTS, split="train", batch_size=32, seed=0) | kwargs
    return make_iterator(corpus, **args)


def texts(batches):
    return [r.text for batch in batches for r in batch]


def test_shards_are_disjoint_and_complete(synthetic_corpus):
    for source, (n, _) in SIZES.items():
        shards = [
            texts(
                iterator(
                    synthetic_corpus,
                    sources={source: 1},
                    num_epochs=1,
                    batch_size=30,
                    shard_index=i,
                    shard_count=3,
                )
            )
            for i in range(3)
        ]
        together = [t for s in shards for t in s]
        assert len(together) == len(set(together)) == n
        assert set(together) == {f"{source} train {i}" for i in range(n)}


def test_shards_of_each_batch_are_the_unsharded_batch(synthetic_corpus):
    """The global stream does not depend on how many processes read it."""
    whole = iterator(synthetic_corpus, batch_size=12)
    shards = [
        iterator(synthetic_corpus, batch_size=12, shard_index=i, shard_count=3) for i in range(3)
    ]
    for _ in range(30):
        parts = [next(s) for s in shards]
        assert [len(p) for p in parts] == [4, 4, 4]
        assert [r for p in parts for r in p] == next(whole)


def test_mixing_ratios_hold_within_two_percent(synthetic_corpus):
    it = iterator(synthetic_corpus, batch_size=200, shard_index=1, shard_count=2)
    batches = [next(it) for _ in range(101)]
    it.close()
    counts = collections.Counter(r.source for batch in batches[:100] for r in batch)
    assert sum(counts.values()) == 10_000
    for source, weight in WEIGHTS.items():
        assert abs(counts[source] / 10_000 - weight / sum(WEIGHTS.values())) < 0.02, counts
    # every batch is mixed too, not just the stream
    assert abs(sum(r.source == "alpha" for r in batches[100]) - 50) <= 2


def test_zero_weight_drops_a_source_and_bad_weights_are_errors(synthetic_corpus):
    batch = next(iterator(synthetic_corpus, sources={"alpha": 1, "beta": 0}, batch_size=200))
    assert {r.source for r in batch} == {"alpha"}
    with pytest.raises(ValueError, match="negative"):
        iterator(synthetic_corpus, sources={"alpha": -1})
    with pytest.raises(KeyError, match="no delta/train"):
        iterator(synthetic_corpus, sources={"alpha": 1, "delta": 1})


def test_shuffling_is_deterministic_per_seed_and_differs_per_epoch(synthetic_corpus):
    def order(seed):
        return texts(
            iterator(synthetic_corpus, sources={"beta": 1}, seed=seed, num_epochs=2, batch_size=50)
        )

    first = order(seed=1)
    assert first == order(seed=1)
    assert first != order(seed=2)
    epoch1, epoch2 = first[:300], first[300:]
    assert set(epoch1) == set(epoch2) and epoch1 != epoch2
    unshuffled = texts(
        iterator(synthetic_corpus, sources={"beta": 1}, num_epochs=1, shuffle=False, batch_size=50)
    )
    assert unshuffled == [f"beta train {i}" for i in range(300)] != epoch1


def test_resume_from_saved_state_reproduces_the_rest_exactly(synthetic_corpus):
    reference = iterator(synthetic_corpus, seed=7)
    for _ in range(13):
        next(reference)
    state = json.loads(json.dumps(reference.get_state()))  # as a checkpoint stores it
    rest = [next(reference) for _ in range(40)]  # crosses the end of gamma's shard (150)

    resumed = iterator(synthetic_corpus, seed=7)
    resumed.set_state(state)
    assert [next(resumed) for _ in range(40)] == rest

    with pytest.raises(ValueError, match="saved with config"):
        iterator(synthetic_corpus, seed=8).set_state(state)
    with pytest.raises(ValueError, match="saved with config"):
        iterator(synthetic_corpus, seed=7, batch_size=64).set_state(state)


def test_state_restores_onto_another_number_of_shards(synthetic_corpus):
    two = [
        iterator(synthetic_corpus, seed=7, batch_size=32, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    for _ in range(5):
        for shard in two:
            next(shard)
    states = [json.loads(json.dumps(shard.get_state())) for shard in two]
    assert states[0] == states[1]  # one state for all processes: a checkpoint stores it once
    one = iterator(synthetic_corpus, seed=7, batch_size=32)
    one.set_state(states[0])
    assert next(one) == next(two[0]) + next(two[1])


def test_finite_epochs_and_batch_hook(synthetic_corpus):
    val = dict(sources={"gamma": 1}, split="val", num_epochs=1, batch_size=4)
    batches = list(
        iterator(synthetic_corpus, **val, shuffle=False, batch_fn=lambda rs: [r.answer for r in rs])
    )
    assert [len(b) for b in batches] == [4, 4, 2]
    assert batches[0] == ["gamma val 0", "gamma val 1", "gamma val 2", "gamma val 3"]
    dropped = list(iterator(synthetic_corpus, **val, drop_remainder=True))
    assert [len(b) for b in dropped] == [4, 4]


def test_argument_errors(synthetic_corpus, tmp_path):
    with pytest.raises(ValueError, match="shard_index"):
        iterator(synthetic_corpus, shard_index=3, shard_count=3)
    with pytest.raises(ValueError, match="multiple of shard_count 3"):
        iterator(synthetic_corpus, batch_size=32, shard_count=3)
    with pytest.raises(FileNotFoundError, match="prepare the corpus first"):
        iterator(tmp_path)


def test_state_saves_and_restores_with_an_orbax_checkpoint(synthetic_corpus, tmp_path):
    """As `mats_jax.training.checkpoints` stores it: the state as one JSON item beside the model."""
    it = iterator(synthetic_corpus, seed=3)
    for _ in range(5):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(5, args=ocp.args.Composite(data=ocp.args.JsonSave(it.get_state())))
        manager.wait_until_finished()
    rest = [next(it) for _ in range(3)]
    restored = iterator(synthetic_corpus, seed=3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored.set_state(
            manager.restore(5, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
        )
    assert [next(restored) for _ in range(3)] == rest


def test_first_records_and_all_records_read_in_stored_order(synthetic_corpus):
    first = first_records(synthetic_corpus, source="beta", split="val", count=5)
    assert first == synthetic_records("beta", "val", 5)
    assert (
        len(first_records(synthetic_corpus, source="beta", split="val", count=1000))
        == SIZES["beta"][1]
    )
    with pytest.raises(KeyError, match="no beta/test"):
        first_records(synthetic_corpus, source="beta", split="test", count=1)
    everything = list(all_records(synthetic_corpus))
    assert len(everything) == sum(a + b for a, b in SIZES.values())
    assert everything[:3] == synthetic_records("alpha", "train", 3)
