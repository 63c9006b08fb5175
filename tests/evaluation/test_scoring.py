"""Scores of generated text. Expected values are worked out by hand in each test's comments."""

import numpy as np
import pytest

from mats_jax.evaluation import scoring


def letters(texts: list[str]) -> np.ndarray:
    """A stand-in text embedding (letter counts): equal texts embed equally, which is all the
    nearest-class mapping relies on."""
    return np.array(
        [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], float
    )


def test_classification_scores_count_clap_exact_and_substring_matches():
    classes = ["dog", "rain", "rooster"]
    texts = ["Dog", "Dog, rooster", "rain", "a cat"]
    truths = ["dog", "rooster", "dog", "rain"]
    metrics, confusion = scoring.classification_scores(texts, truths, classes, letters)
    # exact: only "Dog" (1 of 4); substring: "Dog" and "Dog, rooster" name their class (2 of 4)
    assert metrics["accuracy_exact"] == 0.25
    assert metrics["accuracy_substring"] == 0.5
    # nearest by letter counts: "Dog"->dog, "Dog, rooster"->rooster (r,o,o,s,t,e,r outweigh d,o,g),
    # "rain"->rain (truth dog: wrong), "a cat"->rain (shares the a's: cosine 0.41 vs rooster's 0.12)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert metrics["accuracy_clap"] == 0.75


def test_qa_reads_yes_no_and_compares_with_the_majority():
    texts = ["Yes, it is raining.", "No", "Eleven", "Nine times"]
    answers = [
        ["YES", "yes", "NO"],
        ["yes", "yes", "no"],
        ["ELEVEN", "NINE", "ELEVEN"],
        ["ELEVEN", "NINE", "ELEVEN"],
    ]
    scores = scoring.qa_scores(texts, answers)
    assert scores["accuracy"] == 0.5  # 1st and 3rd match the majority
    assert scores["accuracy_any_annotator"] == 0.75  # the 2nd's "no" was one annotator's answer


def test_majority_breaks_ties_by_first_answer():
    assert scoring.majority(["No", "yes", "YES", "no"]) == "no"


def test_caption_metrics_match_hand_computed_values():
    scores, unavailable = scoring.caption_scores(["a dog barks loudly"], [["a dog barks"]])
    # BLEU-1: 3 of 4 unigrams match, candidate longer than reference (no brevity penalty)
    assert scores["BLEU-1"] == pytest.approx(0.75, abs=1e-6)
    # BLEU-2: sqrt(3/4 · 2/3)
    assert scores["BLEU-2"] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    # ROUGE-L (beta 1.2): LCS 3, P 3/4, R 1 -> 2.44·0.75 / (1 + 1.44·0.75)
    assert scores["ROUGE-L"] == pytest.approx(2.44 * 0.75 / (1 + 1.44 * 0.75), abs=1e-6)
    assert 0 < scores["METEOR"] < 1
    assert set(unavailable) == ({"SPICE", "SPIDEr"} if scoring.spice_unavailable() else set())


def test_cider_d_rewards_the_right_caption_over_a_wrong_one():
    references = [
        ["a dog barks at a man", "a dog is barking"],
        ["rain falls on a tin roof", "heavy rain on a roof"],
    ]
    right, _ = scoring.caption_scores(["a dog barks", "rain falls on a roof"], references)
    swapped, _ = scoring.caption_scores(["rain falls on a roof", "a dog barks"], references)
    assert right["CIDEr-D"] > 1.0 and swapped["CIDEr-D"] == 0.0
    assert swapped["BLEU-1"] < right["BLEU-1"]


def test_spice_runs_only_with_its_stanford_jars(tmp_path):
    reason = scoring.spice_unavailable(tmp_path)
    assert "stanford-corenlp-3.6.0.jar" in reason and "SPIDEr" in reason
    for jar in scoring.SPICE_JARS:
        (tmp_path / jar).write_bytes(b"")
    assert scoring.spice_unavailable(tmp_path) is None
