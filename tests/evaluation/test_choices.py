"""MMAU's answer matching, and its per-group accuracies on the shipped test-mini questions."""

import collections
import json
import re

import pytest

from mats_jax.evaluation.choices import choice_scores, picks_answer
from tests.support.paths import DATA_ROOT, shared

CHOICES = ["Man", "Woman", "Child", "Robot"]


@pytest.mark.parametrize(
    "prediction, right",
    [
        ("It is a man speaking.", True),  # every answer word, no wrong choice's word
        ("MAN", True),
        ("a man or a woman", False),  # names a wrong choice too
        ("a male voice", False),  # the answer's word is missing
        ("", False),
    ],
)
def test_a_prediction_picks_the_answer_with_its_words_and_no_wrong_choices(prediction, right):
    assert picks_answer("Man", prediction, CHOICES) is right


def test_words_shared_with_the_answer_do_not_count_against_it():
    choices = ["Yes, it is the second sound.", "Yes, it is the third sound.", "No, it is not."]
    # "yes", "it", "is", "the", "sound" are the answer's too; only "third", "no", "not" are wrong
    assert picks_answer(choices[0], "yes it is the second sound", choices)
    assert not picks_answer(choices[0], "the second sound, not the third", choices)
    assert not picks_answer(choices[0], "the second", choices)  # "yes", "it", ... missing


def mmau_mini() -> list[dict]:
    return json.loads(shared(DATA_ROOT / "captions" / "mmau" / "mmau-test-mini.json").read_text())


def scores_of(predictions: list[str], rows: list[dict]) -> dict[str, float]:
    return choice_scores(
        predictions, [r["answer"] for r in rows], [r["choices"] for r in rows], rows
    )


def test_test_mini_answered_with_its_answers_scores_100_percent_everywhere():
    rows = mmau_mini()
    scores = scores_of([r["answer"] for r in rows], rows)
    assert scores["accuracy"] == 1.0 and set(scores.values()) == {1.0}
    assert {"accuracy/task/sound", "accuracy/task/music", "accuracy/task/speech"} <= set(scores)
    assert {"accuracy/difficulty/easy", "accuracy/difficulty/medium"} <= set(scores)
    assert "accuracy/category/Reasoning" in scores
    assert "accuracy/sub-category/Counting" in scores


def test_test_mini_always_answered_with_the_first_choice():
    rows = mmau_mini()
    scores = scores_of([r["choices"][0] for r in rows], rows)

    # A prediction that is a choice picks the answer exactly when it has the answer's words (a
    # superset would hold a wrong-only word, a subset misses one): count those per task.
    def word_set(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    right, total = collections.Counter(), collections.Counter()
    for r in rows:
        total[r["task"]] += 1
        right[r["task"]] += word_set(r["choices"][0]) == word_set(r["answer"])
    for task in ("sound", "music", "speech"):
        assert scores[f"accuracy/task/{task}"] == pytest.approx(right[task] / total[task])
    assert scores["accuracy"] == pytest.approx(sum(right.values()) / len(rows))
    assert 0.2 < scores["accuracy"] < 0.6  # neither all nor none: the first is right for some
