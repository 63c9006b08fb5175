"""Descriptions files: cleaning generations, reading them back, and replacing the template
"The sound of <label>." in classification records (prepare --descriptions)."""

from __future__ import annotations

import json

from mats_jax.data import descriptions as D
from mats_jax.data.rows import read_jsonl

INSTRUCTION = "Identify the sounds in the audio clip, only display audio tags."


def test_clean_keeps_the_first_sentence():
    assert D.clean('  "A dog barks loudly.  Then it\nstops." ') == "A dog barks loudly."
    assert D.clean("   ") == ""


def test_classification_records_take_a_description_of_their_label(tmp_path):
    corpus = tmp_path / "train.jsonl"
    rows = [
        {"text": "The sound of dog.", "task": "cla_label", "answer": "Dog", "clip": "c1"},
        {"text": "The sound of dog.", "task": "cla_label", "answer": "Dog", "clip": "c2"},
        {"text": "The sound of cat.", "task": "cla_label", "answer": "Cat", "clip": "c3"},
        {"text": "A dog barks.", "task": "caption", "answer": "A dog barks.", "clip": "c4"},
    ]
    corpus.write_text(
        "".join(
            json.dumps({**r, "instruction": INSTRUCTION, "tag": "", "source": "esc50"}) + "\n"
            for r in rows
        )
    )
    table_file = tmp_path / "descriptions.jsonl"
    table_file.write_text(
        json.dumps({"caption": "Woofing.", "output": "dog"})
        + "\n"
        + json.dumps({"caption": "Barking.", "output": "Dog"})
        + "\n"
    )
    table = D.read_descriptions(table_file)
    assert table == {"dog": ["Woofing.", "Barking."]}
    texts = [r.text for r in D.with_descriptions(read_jsonl(corpus), table)]
    assert texts[0] in ("Woofing.", "Barking.") and texts[1] in ("Woofing.", "Barking.")
    assert texts[2:] == ["The sound of cat.", "A dog barks."]
    again = [r.text for r in D.with_descriptions(read_jsonl(corpus), table)]
    assert again == texts
