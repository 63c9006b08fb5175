"""Multiple-choice answers read as MMAU's own evaluation script reads them (Sakshi113/MMAU,
`evaluation.py`), with its breakdown: by task (sound, music, speech), category, sub-category
and difficulty.

A generated text picks the right choice when, comparing lower-cased word sets, it holds every
word of the answer and no word that only a wrong choice has (words shared with the answer do
not count against it). An empty text picks nothing.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BREAKDOWN = ("task", "category", "sub-category", "difficulty")


def words(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", str(text).lower()))


def picks_answer(answer: str, prediction: str, choices: Iterable[str]) -> bool:
    said, right = words(prediction), words(answer)
    if not said:
        return False
    wrong = set().union(*(words(c) - right for c in choices if words(c) != right))
    return right <= said and not (said & wrong)


def _groups(value: Any) -> list[str]:
    """A row's value of a breakdown field; a few MMAU rows list their category (`["Reasoning"]`)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def choice_scores(
    predictions: Sequence[str],
    answers: Sequence[str],
    choices: Sequence[Sequence[str]],
    rows: Sequence[Mapping[str, Any]],
) -> dict[str, float]:
    """{"accuracy", "accuracy/FIELD/VALUE" for each BREAKDOWN field a row has}: the share of
    questions whose prediction picks the answer among its choices, overall and per group."""
    right: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for prediction, answer, options, row in zip(predictions, answers, choices, rows, strict=True):
        keys = ["accuracy"] + [
            f"accuracy/{field}/{group}" for field in BREAKDOWN for group in _groups(row.get(field))
        ]
        hit = picks_answer(answer, prediction, options)
        for key in keys:
            total[key] += 1
            right[key] += hit
    return {key: right[key] / total[key] for key in sorted(total, key=_order)}


def _order(key: str) -> tuple[int, str]:
    """`accuracy` first, then the breakdown fields in BREAKDOWN order."""
    field = key.split("/")[1] if "/" in key else ""
    return (BREAKDOWN.index(field) + 1 if field else 0, key)
