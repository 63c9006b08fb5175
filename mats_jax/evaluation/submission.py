"""Predictions in the layouts of the scorers we cannot run: MMAU test's evaluation server (and
its `evaluation.py`), and AIR-Bench Chat's GPT-4 judge (`score_chat.py`, which reads
`Chat_result_modelx.jsonl` from the folder it runs in)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mats_jax.evaluation.benchmarks import Example

MMAU_FILE = "mmau_predictions.json"
AIRBENCH_FILE = "Chat_result_modelx.jsonl"
AIRBENCH_FIELDS = ("meta_info", "question", "answer_gt", "path", "task_name", "dataset_name")


def files(scorer: str, examples: Sequence[Example], texts: Sequence[str]) -> dict[str, str]:
    """{file name: text} to write beside the report for a benchmark scored as `scorer`."""
    if scorer == "choice":
        # MMAU's script reads `model_output`; its README names the key `model_prediction`
        rows = [
            {**e.source, "model_output": text, "model_prediction": text}
            for e, text in zip(examples, texts, strict=True)
        ]
        return {MMAU_FILE: json.dumps(rows, indent=1, ensure_ascii=False) + "\n"}
    if scorer == "chat":
        lines = [
            json.dumps(
                {
                    **{k: e.source[k] for k in AIRBENCH_FIELDS},
                    "response": text,
                    "uniq_id": e.source["uniq_id"],
                },
                ensure_ascii=False,
            )
            + "\n"
            for e, text in zip(examples, texts, strict=True)
        ]
        return {AIRBENCH_FILE: "".join(lines)}
    return {}
