"""The Record type: validation, JSON form, and classification texts made from labels."""

import json

import pytest

from mats_jax.data import records as R


def test_json_round_trip_keeps_unicode():
    record = R.caption(
        "Café door creaks — twice", dataset="clotho", source="clotho", clip="clotho:a b.wav"
    )
    line = record.to_json()
    assert "Café" in line and "\n" not in line
    assert R.Record.from_json(line) == record
    assert R.Record.from_json(line.encode()) == record


def test_caption_and_classification_follow_the_paper_prompts():
    cap = R.caption("A dog barks", dataset="audiocaps", source="audiocaps")
    assert (cap.task, cap.tag, cap.answer) == (
        "caption",
        "[audio caption audiocaps]",
        "A dog barks",
    )
    assert cap.instruction == "Describe the following audio in a caption."
    cla = R.classification(["Dog"], tag=R.SINGLE_EVENT, source="esc50")
    assert cla.instruction == "Identify the sounds in the audio clip, only display audio tags."
    assert (cla.text, cla.answer, cla.tag) == ("The sound of dog.", "Dog", "[single event]")


def test_label_texts_use_first_synonyms_and_answers_keep_full_names():
    labels = ["Speech", "Male speech, man speaking", "Dog"]
    assert R.label_text(labels) == "Sounds of speech, male speech and dog."
    assert R.label_answer(labels) == "Speech, Male speech, man speaking, Dog"
    assert R.label_text(["Music", "Dog"]) == "Sounds of music and dog."


@pytest.mark.parametrize(
    "change, message",
    [
        ({"text": " "}, "empty 'text'"),
        ({"answer": ""}, "empty 'answer'"),
        ({"task": "captioning"}, "unknown task"),
        ({"tag": "audio caption"}, "not of the form"),
        ({"source": "my source"}, "file-safe"),
        ({"instruction": 3}, "must be a string"),
    ],
)
def test_invalid_records_are_rejected_with_a_reason(change, message):
    row = json.loads(R.caption("A dog barks", dataset="x", source="x").to_json()) | change
    with pytest.raises(ValueError, match=message):
        R.Record.from_dict(row)


def test_from_dict_requires_the_schema_and_ignores_extra_keys():
    row = {
        "text": "t",
        "task": "qa",
        "instruction": "Is it loud?",
        "answer": "Yes",
        "tag": "",
        "extra": 1,
    }
    with pytest.raises(ValueError, match="missing field.*source"):
        R.Record.from_dict(row)
    assert R.Record.from_dict(row, source="mine").source == "mine"
    assert R.Record.from_dict(row | {"source": "theirs"}, source="mine").source == "theirs"
