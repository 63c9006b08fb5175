"""Packing the record stream into rows: first fit, nothing lost, duplicated or split; the same
seed gives the same batches; a saved state (carried examples included) resumes exactly; shards
of rows; at least 90% of the positions are real on the MATS-LLaMA mixture of real data."""

import collections
import json
import random
import runpy
import zlib

import numpy as np
import pytest

from mats_jax.data.packing import Example, FirstFit, efficiency
from mats_jax.data.pipeline import make_iterator, make_packed_iterator
from mats_jax.data.prepare import prepare, real_inputs
from mats_jax.training.checkpoints import Checkpoints
from tests.support.paths import DATA_ROOT, ROOT, shared
from tests.support.records import SIZES

WEIGHTS = {"alpha": 5, "beta": 3, "gamma": 2}
ROW_LENGTH, MAX_PER_ROW = 256, 5


def length(record) -> int:
    """A synthetic length in [10, 130), fixed by the record's text."""
    return 10 + zlib.crc32(record.text.encode()) % 120


def iterator(corpus, **kwargs):
    args = dict(
        sources=WEIGHTS,
        split="train",
        rows=4,
        row_length=ROW_LENGTH,
        max_per_row=MAX_PER_ROW,
        length_fn=length,
        seed=0,
    )
    return make_packed_iterator(corpus, **(args | kwargs))


def texts(batch):
    """A batch of the default batch_fn, row by row, as the records' texts."""
    rows, _ = batch
    return [[r.text for r in row] for row in rows]


def check_rows(rows, row_length=ROW_LENGTH, max_per_row=MAX_PER_ROW):
    for row in rows:
        assert len(row) <= max_per_row
        assert sum(length(r) for r in row) <= row_length


# ---- the packer alone -------------------------------------------------------------------------


def pack_all(packer, lengths):
    """Every batch of a finite stream of lengths (keys: the stream indices)."""
    stream = iter([Example(i, n) for i, n in enumerate(lengths)])
    carry, batches = [], []
    while True:
        packed = packer.pack(carry, stream)
        if not any(packed.rows):
            assert not packed.carry
            return batches
        batches.append(packed)
        carry = packed.carry


def test_first_fit_places_in_the_first_row_with_room_and_carries_the_rest():
    packer = FirstFit(rows=2, row_length=10, max_per_row=3, lookahead=2)
    stream = iter([Example(k, n) for k, n in zip("abcdefghij", [6, 5, 4, 3, 7, 2, 9, 9, 9, 1])])
    first = packer.pack([], stream)
    # f (2) fills the second row's last room, after which no row is open: pulling stops
    assert [[e.key for e in row] for row in first.rows] == [["a", "c"], ["b", "d", "f"]]
    assert [e.key for e in first.carry] == ["e"] and first.pulled == 6
    second = packer.pack(first.carry, stream)
    # e (carried) goes first; g fits the second row, h and i fit nowhere: lookahead 2 ends it
    assert [[e.key for e in row] for row in second.rows] == [["e"], ["g"]]
    assert [e.key for e in second.carry] == ["h", "i"] and second.pulled == 3
    assert second.row_lengths() == [[7], [9]]
    assert efficiency(second.row_lengths(), 10) == 0.8
    assert efficiency([[3, 4], [5], []], 10) == 0.4


def test_packer_errors():
    packer = FirstFit(rows=2, row_length=10, max_per_row=3)
    with pytest.raises(ValueError, match=r"example 'long' has 11 positions, more than row_length"):
        packer.pack([], iter([Example("short", 3), Example("long", 11)]))
    with pytest.raises(ValueError, match="max_per_row must be at least 1"):
        FirstFit(rows=2, row_length=10, max_per_row=0)
    bounded = FirstFit(rows=2, row_length=10, max_per_row=3, max_targets_per_row=4)
    with pytest.raises(ValueError, match=r"example 'wordy' has 5 targets, more than max_targets"):
        bounded.pack([], iter([Example("wordy", 6, targets=5)]))


def test_a_bound_on_targets_closes_rows_that_still_have_positions():
    packer = FirstFit(rows=2, row_length=10, max_per_row=3, max_targets_per_row=4)
    stream = iter([Example(k, 3, targets=t) for k, t in zip("abcd", [3, 2, 1, 2])])
    packed = packer.pack([], stream)
    # b (2) does not fit a's row (3 of 4 targets used) although its positions would;
    # c (1) fills a's row to 4 targets, which closes it; d joins b
    assert [[e.key for e in row] for row in packed.rows] == [["a", "c"], ["b", "d"]]
    assert packed.carry == [] and packed.pulled == 4


@pytest.mark.parametrize("rows,row_length,max_per_row,lookahead", [(8, 512, 12, 64), (3, 64, 2, 1)])
def test_an_epoch_of_random_lengths_is_packed_whole(rows, row_length, max_per_row, lookahead):
    rng = random.Random(0)
    lengths = [  # mostly short, some up to a whole row
        rng.randint(1, row_length) if rng.random() < 0.1 else rng.randint(1, row_length // 4)
        for _ in range(3000)
    ]
    packer = FirstFit(rows, row_length, max_per_row, lookahead)
    batches = pack_all(packer, lengths)
    placed = [e.key for b in batches for row in b.rows for e in row]
    assert sorted(placed) == list(range(len(lengths)))  # none lost, none duplicated
    for b, nxt in zip(batches, batches[1:] + [None]):
        assert len(b.carry) <= rows
        for row in b.rows:
            assert len(row) <= max_per_row and sum(e.length for e in row) <= row_length
            keys = [e.key for e in row]
            assert keys == sorted(keys)  # carried first, then in stream order
        if nxt is not None:  # every carried example goes into the very next batch
            assert {e.key for e in b.carry} <= {e.key for row in nxt.rows for e in row}
    assert pack_all(packer, lengths) == batches  # pure


# ---- the packed iterator ----------------------------------------------------------------------


def test_an_epoch_is_packed_whole_and_the_stream_is_the_unpacked_one(synthetic_corpus):
    one = list(iterator(synthetic_corpus, sources={"alpha": 1}, num_epochs=1))
    placed = [t for batch in one for row in texts(batch) for t in row]
    assert sorted(placed) == sorted(f"alpha train {i}" for i in range(SIZES["alpha"][0]))
    carried = 0
    for rows, stats in one:
        check_rows(rows)
        positions = sum(length(r) for row in rows for r in row)
        assert stats["positions"] == positions and stats["examples"] == sum(map(len, rows))
        assert stats["efficiency"] == stats["global_efficiency"] == positions / (4 * ROW_LENGTH)
        carried += stats["carried"] > 0
    assert carried > len(one) // 2  # the carry is exercised

    mixed = [r for rows, _ in iterator(synthetic_corpus, num_epochs=1) for row in rows for r in row]
    unpacked = [
        r
        for b in make_iterator(
            synthetic_corpus, sources=WEIGHTS, split="train", batch_size=10, seed=0, num_epochs=1
        )
        for r in b
    ]
    assert collections.Counter(r.text for r in mixed) == collections.Counter(
        r.text for r in unpacked
    )


def test_same_seed_same_batches(synthetic_corpus):
    def batches(seed):
        it = iterator(synthetic_corpus, seed=seed)
        return [texts(next(it)) for _ in range(20)]

    assert batches(1) == batches(1) != batches(2)


def test_resume_with_carried_examples_reproduces_the_rest_exactly(synthetic_corpus):
    reference = iterator(synthetic_corpus, seed=7, batch_fn=lambda rows: texts((rows, None)))
    for _ in range(9):
        next(reference)
    state = json.loads(json.dumps(reference.get_state()))  # as a checkpoint stores it
    assert state["carry"] and set(state) == {"position", "carry", "config"}
    rest = [next(reference) for _ in range(60)]  # crosses the end of gamma's first epoch

    resumed = iterator(synthetic_corpus, seed=7, batch_fn=lambda rows: texts((rows, None)))
    next(resumed)  # a used iterator restores just as well
    resumed.set_state(state)
    assert [next(resumed) for _ in range(60)] == rest

    for other in (dict(seed=8), dict(row_length=512), dict(max_per_row=4), dict(rows=8)):
        with pytest.raises(ValueError, match="saved with config"):
            iterator(synthetic_corpus, **(dict(seed=7) | other)).set_state(state)


def test_shards_of_rows_are_the_unsharded_batch_and_states_move_between_counts(synthetic_corpus):
    whole = iterator(synthetic_corpus, rows=6)
    shards = [iterator(synthetic_corpus, rows=6, shard_index=i, shard_count=3) for i in range(3)]
    for _ in range(15):
        parts = [next(s) for s in shards]
        rows, stats = next(whole)
        assert [r for part, _ in parts for r in part] == rows
        assert [len(part) for part, _ in parts] == [2, 2, 2]
        assert {s["global_efficiency"] for _, s in parts} == {stats["global_efficiency"]}
        assert sum(s["positions"] for _, s in parts) == stats["positions"]
    states = [s.get_state() for s in shards]
    assert states[0] == states[1] == states[2] == whole.get_state()
    one = iterator(synthetic_corpus, rows=6)
    one.set_state(json.loads(json.dumps(states[1])))
    assert next(one)[0] == [r for s in shards for r in next(s)[0]]


def test_state_saves_and_restores_with_the_training_checkpoints(synthetic_corpus, tmp_path):
    it = iterator(synthetic_corpus, seed=3)
    for _ in range(5):
        next(it)
    state = {"w": np.arange(3.0)}
    checkpoints = Checkpoints(tmp_path / "ckpt", keep=2, writer=True)
    checkpoints.save(5, state, data_iterator=it)
    checkpoints.manager.wait_until_finished()
    rest = [texts(next(it)) for _ in range(5)]
    restored = iterator(synthetic_corpus, seed=3)
    Checkpoints(tmp_path / "ckpt", keep=2).restore(5, state, data_iterator=restored)
    assert [texts(next(restored)) for _ in range(5)] == rest


def test_argument_errors_and_a_too_long_example_is_named(synthetic_corpus):
    with pytest.raises(ValueError, match="shard_index"):
        iterator(synthetic_corpus, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="rows 4 must be a positive multiple of shard_count 3"):
        iterator(synthetic_corpus, shard_count=3)
    long = iterator(synthetic_corpus, sources={"beta": 1}, length_fn=lambda r: 300, shuffle=False)
    with pytest.raises(ValueError, match=r"#0 \(beta caption clip 'beta:0'.*more than row_length"):
        next(long)


# ---- efficiency on real data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mats_llama_lengths(tmp_path_factory):
    """(corpus, config, length_fn, targets_fn): the MATS-LLaMA mixture over the real shared
    data, lengths and targets as the packed trainer counts them with SmolLM2's tokenizer."""
    from mats_jax.mats.prompt import tail_text
    from mats_jax.models.tokenizer import load_tokenizer
    from mats_jax.runtime.assets import smollm2_gguf_path

    config = runpy.run_path(str(ROOT / "configs" / "mats_llama.py"))["get_config"]()
    sources = {name: w for name, w in config.data.sources.items() if w > 0}
    corpus = tmp_path_factory.mktemp("mats_llama") / "corpus"
    prepare(corpus, real_inputs(sorted(sources), shared(DATA_ROOT)))
    tokenizer = load_tokenizer(smollm2_gguf_path())
    head = 1 + len(tokenizer("USER: <Speech>", add_special_tokens=False).input_ids)
    prefix, tail_length = config.mapper.prefix_length, config.data.tail_length
    assert (head, prefix) == (6, 40)

    def prompt_and_targets(record):
        prompt, answer = tokenizer(
            [tail_text(record.instruction, record.tag), record.answer], add_special_tokens=False
        ).input_ids
        room = min(config.data.max_answer_tokens, tail_length - len(prompt) - 1)
        return len(prompt), len(answer[:room]) + 1  # the answer and EOS

    def length_fn(record):
        return head + prefix + sum(prompt_and_targets(record))

    return corpus, config, length_fn, lambda record: prompt_and_targets(record)[1]


def test_at_least_90_percent_of_positions_are_real_on_the_mats_llama_mixture(mats_llama_lengths):
    """At the config's row length, slots per row and bound on a row's targets."""
    corpus, config, length_fn, targets_fn = mats_llama_lengths
    d = config.data
    assert (d.packed_length, d.max_per_row, d.max_targets_per_row) == (512, 8, 160)
    it = make_packed_iterator(
        corpus,
        sources={name: w for name, w in d.sources.items() if w > 0},
        split="train",
        rows=16,
        row_length=d.packed_length,
        max_per_row=d.max_per_row,
        max_targets_per_row=d.max_targets_per_row,
        targets_fn=targets_fn,
        length_fn=length_fn,
        batch_fn=lambda rows: [[(length_fn(r), targets_fn(r)) for r in row] for row in rows],
        seed=0,
    )
    batches = [next(it) for _ in range(40)]
    it.close()
    rows = [row for rows, _ in batches for row in rows]
    lengths = [[n for n, _ in row] for row in rows]
    assert all(sum(row) <= 512 and len(row) <= 8 for row in lengths)
    assert all(sum(t for _, t in row) <= 160 for row in rows)
    assert efficiency(lengths, 512) >= 0.90, efficiency(lengths, 512)
    assert np.mean([s["global_efficiency"] for _, s in batches]) == pytest.approx(
        efficiency(lengths, 512)
    )
