"""Scores of generated text: zero-shot classification (single- and multi-label), captioning
metrics, QA accuracy, multiple choice (`choices`), and the benchmarks only a judge model scores.

Generated text is mapped to classes as the LTU/GAMA line of work scores generative models: by the
similarity of its text embedding (here CLAP's) to each class name's. Single-label sets take the
nearest class (accuracy); FSD50K ranks every class by that similarity (mAP); DCASE 2017 predicts a
label set, the nearest class of each tag the text lists, against the clip's set (micro-F1).

Captioning metrics are coco-caption's (the `pycocoevalcap` package), as audio-captioning papers
report them: the PTB tokeniser, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, and SPICE with SPIDEr =
(CIDEr-D + SPICE) / 2. The tokeniser, METEOR and SPICE run Java; SPICE also needs the Stanford
CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use, so offline it is reported as
unavailable (with the reason) unless those jars were put in place beforehand.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mats_jax.evaluation.benchmarks import Example
from mats_jax.evaluation.choices import choice_scores
from mats_jax.runtime.errors import InputError

CAPTION_METRICS = (
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "METEOR",
    "ROUGE-L",
    "CIDEr-D",
    "SPICE",
    "SPIDEr",
)
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def normalize(text: str) -> str:
    """Lower case, punctuation and underscores to spaces, single spaces: how answers are
    compared.
    """
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


# ---- classification ----------------------------------------------------------------------------


class UnknownClass(InputError):
    pass


def class_similarity(
    texts: Sequence[str], classes: Sequence[str], embed_texts: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """[text, class] cosine similarity of the texts' CLAP text embeddings to the class names'."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    return unit(embed_texts(list(texts))) @ unit(embed_texts(list(classes))).T


def match_classes(
    texts: Sequence[str], classes: Sequence[str], embed_texts: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """The class whose CLAP text embedding is nearest (cosine) to each generated text's."""
    return class_similarity(texts, classes, embed_texts).argmax(-1)


def class_indices(labels: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Where each label is in `classes`, compared as `normalize` says (a metadata label
    `bird chirping, tweeting` is the class list's `bird chirping_ tweeting`)."""
    index = {normalize(c): i for i, c in enumerate(classes)}
    unknown = sorted({label for label in labels if normalize(label) not in index})
    if unknown:
        raise UnknownClass(
            f"labels not in the class list of {len(classes)}: {', '.join(unknown[:5])}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    return [index[normalize(label)] for label in labels]


def classes_for(
    scorer: str, examples: Sequence[Example], vocabulary: Sequence[str] | None = None
) -> list[str]:
    """The classes a classification benchmark is scored against: `vocabulary` (a class list
    file's), which must name every label of the examples, or else every label they use. Called
    before generation, so that a label missing from the list fails first."""
    if scorer not in ("classification", "multilabel"):
        return []
    labels = sorted({label for e in examples for label in e.references})
    if vocabulary is None:
        return labels
    class_indices(labels, vocabulary)
    return list(vocabulary)


def classification_scores(
    texts: Sequence[str],
    truths: Sequence[str],
    classes: Sequence[str],
    embed_texts: Callable[[list[str]], np.ndarray],
) -> tuple[dict[str, float], np.ndarray]:
    """({accuracy by CLAP similarity, exact match, substring match}, confusion matrix
    [true, predicted]).

    `exact`: the whole generated text is the class name; `substring`: the class name appears in it
    as whole words (tags lists such as "Dog, Rooster" count when they name the class).
    """
    predicted = match_classes(texts, classes, embed_texts)
    true = np.array(class_indices(truths, classes))
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (true, predicted), 1)
    exact = [normalize(text) == normalize(truth) for text, truth in zip(texts, truths)]
    substring = [
        f" {normalize(truth)} " in f" {normalize(text)} " for text, truth in zip(texts, truths)
    ]
    return {
        "accuracy_clap": float(np.mean(predicted == true)),
        "accuracy_exact": float(np.mean(exact)),
        "accuracy_substring": float(np.mean(substring)),
    }, confusion


# ---- multi-label classification ------------------------------------------------------------


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under one class's precision-recall curve, as a step function over the distinct
    score thresholds (tied scores enter together): sum over thresholds of (recall gained) x
    (precision there)."""
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order].astype(float)
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(positive)[last_of_each_score]
    precision = true_positives / (last_of_each_score + 1)
    recall_gained = np.diff(np.r_[0.0, true_positives]) / positive.sum()
    return float(np.sum(recall_gained * precision))


def tags_of(text: str) -> list[str]:
    """The tags a generated text lists ("Car, Bus; Siren" -> three); a caption is one tag."""
    return [t.strip() for t in re.split(r"[,;]", text) if t.strip()] or [text]


def multilabel_scores(
    texts: Sequence[str],
    truths: Sequence[Sequence[str]],
    classes: Sequence[str],
    embed_texts: Callable[[list[str]], np.ndarray],
) -> dict[str, float]:
    """{mAP, micro F1 / precision / recall} of generated texts against each clip's label set.

    mAP: each class ranks every clip by the text's similarity to the class name; the mean of
    the classes' average precisions, over the classes with at least one positive clip.
    micro-F1: the predicted set is the nearest class of each tag the text lists; true
    positives, false positives and false negatives are summed over every clip and class, and
    F1 = 2 TP / (2 TP + FP + FN).
    """
    truth = np.zeros((len(texts), len(classes)), bool)
    for row, labels in enumerate(truths):
        truth[row, class_indices(labels, classes)] = True
    similarity = class_similarity(texts, classes, embed_texts)
    present = np.flatnonzero(truth.any(0))
    average_precisions = [average_precision(similarity[:, c], truth[:, c]) for c in present]

    tags = [tags_of(t) for t in texts]
    nearest = match_classes([t for ts in tags for t in ts], classes, embed_texts)
    predicted = np.zeros_like(truth)
    rows = np.repeat(np.arange(len(texts)), [len(ts) for ts in tags])
    predicted[rows, nearest] = True
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    return {
        "mAP": float(np.mean(average_precisions)),
        "micro_F1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
    }


# ---- question answering ------------------------------------------------------------------------


def majority(answers: Sequence[str]) -> str:
    """The most frequent normalised answer (ties: the first given)."""
    normalized = [normalize(a) for a in answers]
    return max(dict.fromkeys(normalized), key=normalized.count)


def answer_of(text: str, answers: Sequence[str]) -> str:
    """A generated text read as an answer: for a yes/no question its first yes or no, else the
    text.
    """
    words = normalize(text).split()
    if {normalize(a) for a in answers} <= {"yes", "no"}:
        return next((w for w in words if w in ("yes", "no")), "")
    return " ".join(words)


def qa_scores(texts: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Accuracy against the majority answer, and against any annotator's answer."""
    read = [answer_of(t, a) for t, a in zip(texts, answers)]
    return {
        "accuracy": float(np.mean([r == majority(a) for r, a in zip(read, answers)])),
        "accuracy_any_annotator": float(
            np.mean([r in {normalize(x) for x in a} for r, a in zip(read, answers)])
        ),
    }


# ---- captioning --------------------------------------------------------------------------------


class JavaMissing(InputError):
    pass


def require_java() -> None:
    """Captioning metrics tokenise with Stanford's PTB tokeniser: fail before hours of
    generation.
    """
    if shutil.which("java") is None:
        raise JavaMissing(
            "captioning metrics need Java (coco-caption's PTB tokeniser, METEOR, SPICE): "
            "install a Java runtime (e.g. apt install default-jre-headless)"
        )


def spice_unavailable(lib: Path | None = None) -> str | None:
    """Why SPICE cannot run here, or None when it can (its jars are in pycocoevalcap's `lib`)."""
    if lib is None:
        import pycocoevalcap.spice as spice

        lib = Path(spice.__file__).parent / "lib"
    missing = [jar for jar in SPICE_JARS if not (lib / jar).is_file()]
    if missing:
        return (
            f"SPICE needs {', '.join(missing)} in {lib} "
            "(pycocoevalcap downloads them on first use; "
            "no download is possible here) — SPIDEr needs SPICE"
        )
    return None


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[str, float], dict[str, str]]:
    """(coco-caption metrics, {metric: why it is unavailable})."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    tokenizer = PTBTokenizer()
    ids = [str(i) for i in range(len(predictions))]
    candidates = tokenizer.tokenize({i: [{"caption": p}] for i, p in zip(ids, predictions)})
    truths = tokenizer.tokenize(
        {i: [{"caption": r} for r in refs] for i, refs in zip(ids, references)}
    )
    scores: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(truths, candidates)
    scores |= {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["METEOR"] = float(Meteor().compute_score(truths, candidates)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(truths, candidates)[0])
    scores["CIDEr-D"] = float(
        Cider().compute_score(truths, candidates)[0]
    )  # coco-caption's CIDEr is CIDEr-D
    unavailable = {}
    reason = spice_unavailable()
    if reason:
        unavailable = {"SPICE": reason, "SPIDEr": reason}
    else:
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(truths, candidates)[0])
        scores["SPIDEr"] = (scores["CIDEr-D"] + scores["SPICE"]) / 2
    return scores, unavailable


# ---- one benchmark ------------------------------------------------------------------------------

JUDGE_UNAVAILABLE = (
    "AIR-Bench Chat is scored by a GPT-4 judge (gpt-4-0125-preview, AIR-Bench's score_chat.py), "
    "a model not available here: Chat_result_modelx.jsonl holds the predictions in the layout "
    "that script reads"
)
ANSWERS_WITHHELD = (
    "the answers of this split are withheld (MMAU test): submit mmau_predictions.json to the "
    "MMAU evaluation server"
)


def score(
    scorer: str,
    texts: Sequence[str],
    examples: Sequence[Example],
    *,
    classes: Sequence[str] = (),
    embed_texts: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, str], tuple[np.ndarray, list[str]] | None]:
    """(metrics, {metric: why it is unavailable}, (confusion matrix, classes) or None) of one
    benchmark's generated `texts` for its `examples`, scored as `scorer` (a Benchmark's
    `scoring`) says: "classification" and "multilabel" against `classes` (`embed_texts` maps
    texts to CLAP text embeddings), "captioning", "qa", "choice" (MMAU) or "chat" (a judge's)."""
    references = [e.references for e in examples]
    if scorer == "classification":
        metrics, matrix = classification_scores(
            texts, [r[0] for r in references], classes, embed_texts
        )
        return metrics, {}, (matrix, list(classes))
    if scorer == "multilabel":
        return multilabel_scores(texts, references, classes, embed_texts), {}, None
    if scorer == "captioning":
        metrics, unavailable = caption_scores(texts, references)
        return metrics, unavailable, None
    if scorer == "choice":
        if not all(references):
            return {}, {"accuracy": ANSWERS_WITHHELD}, None
        answers = [r[0] for r in references]
        metrics = choice_scores(
            texts, answers, [e.choices for e in examples], [e.source for e in examples]
        )
        return metrics, {}, None
    if scorer == "chat":
        return {}, {"GPT-4 judge score": JUDGE_UNAVAILABLE}, None
    return qa_scores(texts, references), {}, None
