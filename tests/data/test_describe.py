"""`python -m mats_jax.data.describe`: N LLM descriptions per class, reproducible for a seed, the
AudioSet ontology's own text where a label maps to it, the original annotation fields."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mats_jax.data import describe
from tests.support.models import tiny_llama_folder
from tests.support.paths import DATA_ROOT, ROOT, shared

ONTOLOGY = DATA_ROOT / "captions" / "audioset" / "ontology.json"
# the ontology's entries, copied by hand from ontology.json
DOG = (
    "Any sounds coming from the familiar domesticated canid which has been selectively bred "
    "over millennia for companionship, protection, as well as for superior sensory "
    "capabilities, and other useful behaviors."
)
BARK = (
    "Principal communication sound produced by dogs. Often transliterated as woof, especially "
    "for large dogs."
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny"))


def run(tmp_path, llm, labels, *extra):
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.jsonl"
    code = describe.main(
        ["--labels", str(labels), "--out", str(out), "--llm", str(llm), "--per-class", "3"]
        + ["--ontology", str(shared(ONTOLOGY)), *extra]
    )
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_llm_descriptions_per_class_are_reproducible_for_a_seed(tmp_path, llm):
    labels = tmp_path / "labels.txt"
    labels.write_text("zorblax hum\n\nquiggle chirp\n")
    first = run(tmp_path, llm, labels, "--seed", "1")
    assert [r["output"] for r in first] == ["zorblax hum"] * 3 + ["quiggle chirp"] * 3
    assert {r["origin"] for r in first} == {"llm"}
    assert all(r["caption"] == r["caption"].strip() and r["caption"] for r in first)
    assert all("\n" not in r["caption"] for r in first)
    assert run(tmp_path, llm, labels, "--seed", "1") == first
    other = run(tmp_path, llm, labels, "--seed", "2")
    assert [r["caption"] for r in other] != [r["caption"] for r in first]


def test_ontology_labels_take_its_description_by_name_or_mid(tmp_path, llm):
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/x,'dog'\n1,/m/05tny_,'Woof'\n2,x1,Zorblax\n")
    rows = run(tmp_path, llm, labels)
    assert rows[:2] == [
        {
            "caption": DOG,
            "output": "dog",
            "task": "cla_label",
            "instruction": "Identify the sounds in the audio clip, only display audio tags.",
            "origin": "ontology",
        },
        {
            "caption": BARK,
            "output": "Woof",
            "task": "cla_label",
            "instruction": "Identify the sounds in the audio clip, only display audio tags.",
            "origin": "ontology",
        },
    ]
    assert [(r["output"], r["origin"]) for r in rows[2:]] == [("Zorblax", "llm")] * 3


def test_a_bad_label_file_is_a_one_line_error(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("index,name\n0,dog\n")
    result = subprocess.run(
        [sys.executable, "-m", "mats_jax.data.describe", "--labels", str(labels)]
        + ["--out", str(tmp_path / "out.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {labels}: a label CSV needs a 'display_name' column"
    assert not (tmp_path / "out.jsonl").exists()


def test_an_existing_output_is_refused_without_overwrite(tmp_path, llm):
    labels, out = tmp_path / "labels.txt", tmp_path / "out.jsonl"
    labels.write_text("Rain\n")
    out.write_text("keep\n")
    args = ["--labels", str(labels), "--out", str(out), "--ontology", str(shared(ONTOLOGY))]
    assert describe.main(args) == 1
    assert out.read_text() == "keep\n"
    assert describe.main([*args, "--overwrite"]) == 0
    assert json.loads(out.read_text())["origin"] == "ontology"
