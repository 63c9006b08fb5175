"""Scores of generated text: zero-shot classification, captioning metrics, QA accuracy.

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


def match_classes(
    texts: Sequence[str], classes: Sequence[str], embed_texts: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """The class whose CLAP text embedding is nearest (cosine) to each generated text's."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    similarity = unit(embed_texts(list(texts))) @ unit(embed_texts(list(classes))).T
    return similarity.argmax(-1)


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
    index = {c: i for i, c in enumerate(classes)}
    predicted = match_classes(texts, classes, embed_texts)
    true = np.array([index[t] for t in truths])
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


def score(
    kind: str,
    texts: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    classes: Sequence[str] = (),
    embed_texts: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, str], tuple[np.ndarray, list[str]] | None]:
    """(metrics, {metric: why it is unavailable}, (confusion matrix, classes) or None) of one
    benchmark's generated `texts` against each example's `references`: a benchmark of `kind`
    "classification" (the first reference is the class; `embed_texts` maps texts to CLAP text
    embeddings), "captioning" or "qa"."""
    if kind == "classification":
        metrics, matrix = classification_scores(
            texts, [r[0] for r in references], classes, embed_texts
        )
        return metrics, {}, (matrix, list(classes))
    if kind == "captioning":
        metrics, unavailable = caption_scores(texts, references)
        return metrics, unavailable, None
    return qa_scores(texts, references), {}, None
