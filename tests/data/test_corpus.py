"""The default corpus shipped with the code: valid, small, attributed, held-out validation."""

from mats_jax.data import corpus
from mats_jax.data.corpus.build import main as rebuild
from mats_jax.data.rows import read_jsonl
from tests.support.paths import DATA_ROOT, shared


def test_default_corpus_is_valid_small_and_attributed():
    splits = {}
    for split, path in corpus.FILES.items():
        rows = read_jsonl(path)
        splits[split] = list(rows)
        assert rows.tally.malformed == 0
    assert sum(p.stat().st_size for p in corpus.FILES.values()) < 1_000_000
    assert len(splits["train"]) == 2_800 and len(splits["val"]) == 500
    assert {r.source for r in splits["train"]} == {"audiocaps", "audioset"}
    assert {r.task for r in splits["val"]} == {"caption"}
    assert not {r.clip for r in splits["train"]} & {r.clip for r in splits["val"]}
    attribution = (corpus.DIRECTORY / "ATTRIBUTION.md").read_text()
    commit = "d004db3ea1b01cf4fd0347dd8d27db90cadc8809"  # AudioCaps
    for needed in (commit, "MIT License", "CC BY 4.0", "CC BY-SA 4.0", "academic"):
        assert needed in attribution


def test_default_corpus_regenerates_byte_for_byte(tmp_path):
    rebuild(["--data-root", str(shared(DATA_ROOT)), "--out", str(tmp_path)])
    for split, path in corpus.FILES.items():
        assert (tmp_path / f"{split}.jsonl").read_bytes() == path.read_bytes(), split
