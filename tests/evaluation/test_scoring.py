"""Scores of generated text. Expected values are worked out by hand in each test's comments."""

import numpy as np
import pytest

from mats_jax.evaluation import scoring
from mats_jax.evaluation.benchmarks import Example


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


CLASS_WORDS = ("dog", "rain", "wind")


def class_word_counts(texts: list[str]) -> np.ndarray:
    """A stand-in text embedding: how often each of `CLASS_WORDS` appears in the text."""
    return np.array([[t.lower().split().count(w) for w in CLASS_WORDS] for t in texts], float)


def by_words(texts: list[str]) -> np.ndarray:
    return class_word_counts([t.replace(",", " ").replace(";", " ") for t in texts])


def test_multilabel_map_and_micro_f1_by_hand():
    texts = ["dog, rain", "dog", "rain", "rain; wind"]
    truths = [["dog"], ["dog", "rain"], ["wind"], ["rain"]]
    scores = scoring.multilabel_scores(texts, truths, list(CLASS_WORDS), by_words)
    # cosine of each whole text to dog / rain / wind (unit word-count vectors):
    #   "dog, rain" .707/.707/0   "dog" 1/0/0   "rain" 0/1/0   "rain; wind" 0/.707/.707
    # dog:  ranks "dog"(1, pos) "dog, rain"(.707, pos), then the negatives: AP 1
    # rain: "rain"(1, neg), tie at .707 {"dog, rain" neg, "rain; wind" pos}: after the tie
    #       1 TP of 3, precision 1/3, recall +1/2; then "dog"(0, pos): 2 of 4, precision 1/2,
    #       recall +1/2 -> AP 1/6 + 1/4 = 5/12
    # wind: "rain; wind"(.707, neg), then a tie at 0 of the other three holding the one
    #       positive: 1 TP of 4 -> AP 1/4
    # mAP = (1 + 5/12 + 1/4) / 3 = 5/9
    assert scores["mAP"] == pytest.approx(5 / 9)
    # predicted sets (nearest class of each tag): {dog, rain} {dog} {rain} {rain, wind}
    #   vs truths {dog} {dog, rain} {wind} {rain}:
    #   TP: dog(1) dog(2) rain(4) = 3; FP: rain(1) rain(3) wind(4) = 3; FN: rain(2) wind(3) = 2
    # micro-F1 = 2·3 / (2·3 + 3 + 2) = 6/11; precision 3/6; recall 3/5
    assert scores["micro_F1"] == pytest.approx(6 / 11)
    assert scores["micro_precision"] == pytest.approx(0.5)
    assert scores["micro_recall"] == pytest.approx(0.6)


def test_average_precision_counts_tied_scores_together_whatever_their_order():
    # scores .5 .5 .1, positives at one of the tied and at .1: after the tie 1 TP of 2
    # (precision 1/2, recall +1/2), after .1 2 of 3 (precision 2/3, recall +1/2):
    # AP = 1/4 + 1/3 = 7/12, whichever of the tied clips comes first
    scores = np.array([0.5, 0.5, 0.1])
    assert scoring.average_precision(scores, np.array([1, 0, 1])) == pytest.approx(7 / 12)
    assert scoring.average_precision(scores, np.array([0, 1, 1])) == pytest.approx(7 / 12)
    # no ties: positives at ranks 2 and 3 -> (1/2 + 2/3) / 2
    scores = np.array([0.9, 0.5, 0.1])
    assert scoring.average_precision(scores, np.array([0, 1, 1])) == pytest.approx(7 / 12)
    assert scoring.average_precision(scores, np.array([1, 0, 1])) == pytest.approx(5 / 6)


def test_classes_are_matched_to_a_class_list_as_text():
    vocabulary = ["bird chirping tweeting", "dog"]  # as LTU's VGGSound list spells them
    examples = [Example("a", ("bird chirping, tweeting",)), Example("b", ("dog",))]
    assert scoring.classes_for("classification", examples, vocabulary) == vocabulary
    assert scoring.classes_for("classification", examples) == ["bird chirping, tweeting", "dog"]
    assert scoring.classes_for("captioning", examples) == []
    with pytest.raises(scoring.UnknownClass, match="cat"):
        scoring.classes_for("multilabel", [Example("c", ("dog", "cat"))], vocabulary)
    # the truth "bird chirping, tweeting" is the list's class 0 despite its comma; "dog" is
    # predicted (nearest by letter counts), so the one clip lands in confusion[0, 1]
    metrics, confusion = scoring.classification_scores(
        ["dog"], ["bird chirping, tweeting"], vocabulary, letters
    )
    np.testing.assert_array_equal(confusion, [[0, 1], [0, 0]])
    assert metrics["accuracy_clap"] == 0.0


def test_benchmarks_scored_elsewhere_say_why():
    examples = [Example("q", (), "How many?", ("one", "two"), {"task": "sound"})]
    metrics, unavailable, _ = scoring.score("choice", ["one"], examples)
    assert metrics == {} and "withheld" in unavailable["accuracy"]
    metrics, unavailable, _ = scoring.score("chat", ["an answer"], [Example("c", ("gt",), "q")])
    assert metrics == {} and "GPT-4" in unavailable["GPT-4 judge score"]
    metrics, _, _ = scoring.score(
        "choice",
        ["two", "one"],
        [Example("q", ("two",), "q", ("one", "two"), {"task": "sound"})] * 2,
    )
    assert metrics == {"accuracy": 0.5, "accuracy/task/sound": 0.5}
