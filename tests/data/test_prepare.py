"""Preparation: Records -> array_record + manifest, atomically; read back unchanged."""

import json
import subprocess
import sys

import pytest

from mats_jax.data.pipeline import load_manifest, make_iterator
from mats_jax.data.prepare import prepare, real_inputs
from mats_jax.data.records import caption
from mats_jax.data.rows import Rows, read_jsonl
from mats_jax.runtime.fileio import MARKER
from tests.support.outputs import fake_workdir, marker_command, one_line, other_files, snapshot
from tests.support.paths import DATA_ROOT, ROOT, shared
from tests.support.records import SIZES, synthetic_records


def read_all(corpus, source, split):
    it = make_iterator(
        corpus,
        sources={source: 1},
        split=split,
        batch_size=64,
        seed=0,
        shuffle=False,
        num_epochs=1,
    )
    return [r for batch in it for r in batch]


def test_round_trip_keeps_every_record_in_order(synthetic_corpus):
    manifest = load_manifest(synthetic_corpus)
    assert manifest["schema_version"] == 1
    for source, (n_train, n_val) in SIZES.items():
        assert manifest["sources"][source] == {
            "train": {"path": f"{source}/train.array_record", "count": n_train},
            "val": {"path": f"{source}/val.array_record", "count": n_val},
        }
        assert read_all(synthetic_corpus, source, "train") == synthetic_records(
            source, "train", n_train
        )


def test_malformed_rows_are_counted_in_the_manifest(tmp_path):
    path = tmp_path / "user.jsonl"
    path.write_text("\n".join([synthetic_records("a", "x", 1)[0].to_json(), "{oops", "[]"]) + "\n")
    manifest = prepare(tmp_path / "corpus", [("train", read_jsonl(path))])
    assert manifest["inputs"] == [
        {"input": str(path), "split": "train", "malformed": 2, "left_out": {}}
    ]
    assert manifest["sources"]["a"]["train"]["count"] == 1


def test_existing_output_is_kept_unless_overwrite(tmp_path, synthetic_corpus):
    out = tmp_path / "corpus"
    one = [caption("one", dataset="a", source="a")]
    prepare(out, [("train", Rows("one", [], lambda tally: iter(one)))])
    with pytest.raises(FileExistsError):
        prepare(out, [("train", Rows("one", [], lambda tally: iter(one)))])
    two = one + [caption("two", dataset="b", source="b")]
    prepare(out, [("val", Rows("two", [], lambda tally: iter(two)))], overwrite=True)
    assert set(load_manifest(out)["sources"]) == {"a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temporary left


def test_a_failure_leaves_nothing_behind(tmp_path):
    def generate(tally):
        yield caption("one", dataset="a", source="a")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        prepare(tmp_path / "corpus", [("train", Rows("bad", [], generate))])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no records"):
        prepare(tmp_path / "corpus", [("train", Rows("empty", [], lambda tally: iter([])))])
    assert list(tmp_path.iterdir()) == []


def test_real_sources_and_cli(tmp_path):
    data = shared(DATA_ROOT)
    manifest = prepare(tmp_path / "real", real_inputs(["esc50", "dcase"], data))
    counts = {
        s: {k: v["count"] for k, v in splits.items()} for s, splits in manifest["sources"].items()
    }
    assert counts == {"esc50": {"train": 1600, "test": 400}, "dcase": {"train": 17}}
    assert read_all(tmp_path / "real", "dcase", "train") == list(real_inputs(["dcase"], data)[0][1])

    cli = [sys.executable, "-m", "mats_jax.data.prepare", "--out", str(tmp_path / "cli")]
    run = dict(cwd=ROOT, capture_output=True, text=True, timeout=300)
    done = subprocess.run(
        [*cli, "--sources", "tut", "--data-root", str(data), "--default-corpus"], **run
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "cli/manifest.json").read_text())
    assert set(manifest["sources"]) == {"tut", "audiocaps", "audioset"}
    failed = subprocess.run(
        [*cli, "--jsonl", str(tmp_path / "missing.jsonl"), "--overwrite"], **run
    )
    assert (
        failed.returncode != 0
        and "missing input file" in failed.stderr
        and "missing.jsonl" in failed.stderr
    )


def test_cli_replaces_only_a_prepared_corpus_and_only_with_overwrite(tmp_path):
    path = tmp_path / "user.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in synthetic_records("a", "train", 3)))

    def cli(out, *extra):
        return subprocess.run(
            [sys.executable, "-m", "mats_jax.data.prepare", "--jsonl", str(path)]
            + ["--out", str(out), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    for name, make in (("workdir", fake_workdir), ("others", other_files)):
        target = make(tmp_path / name)
        before = snapshot(target)
        for extra in ((), ("--overwrite",)):
            done = cli(target, *extra)
            assert done.returncode == 1 and one_line(done.stderr) == (
                f"error: {target} exists and is not a previous `data.prepare` output; "
                "choose another --out"
            )
            assert snapshot(target) == before

    assert cli(tmp_path / "corpus").returncode == 0
    assert marker_command(tmp_path / "corpus") == "data.prepare"
    before = snapshot(tmp_path / "corpus")
    done = cli(tmp_path / "corpus")
    assert done.returncode == 1 and one_line(done.stderr) == (
        f"error: {tmp_path / 'corpus'} is a previous `data.prepare` output; "
        "pass --overwrite to replace it"
    )
    assert snapshot(tmp_path / "corpus") == before
    path.write_text("".join(r.to_json() + "\n" for r in synthetic_records("b", "train", 2)))
    done = cli(tmp_path / "corpus", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert set(load_manifest(tmp_path / "corpus")["sources"]) == {"b"}

    (tmp_path / "corpus" / MARKER).unlink()  # a corpus prepared before outputs were marked
    assert cli(tmp_path / "corpus").returncode == 1
    assert cli(tmp_path / "corpus", "--overwrite").returncode == 0
    assert marker_command(tmp_path / "corpus") == "data.prepare"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus",
        "others",
        "user.jsonl",
        "workdir",
    ]
