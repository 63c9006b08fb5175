"""MMAU and AIR-Bench predictions written in the layouts of their own scorers."""

import json

from mats_jax.evaluation.benchmarks import Example
from mats_jax.evaluation.submission import AIRBENCH_FILE, MMAU_FILE, files


def test_mmau_predictions_are_the_benchmark_rows_with_the_model_output():
    row = {"id": "q1", "question": "How many?", "choices": ["one", "two"], "task": "sound"}
    written = files("choice", [Example("q1.wav", (), "prompt", ("one", "two"), row)], ["two"])
    assert list(written) == [MMAU_FILE]
    assert json.loads(written[MMAU_FILE]) == [
        {**row, "model_output": "two", "model_prediction": "two"}
    ]


def test_airbench_chat_predictions_have_the_fields_its_judge_reads():
    row = {
        "meta_info": "a dog barks",
        "question": "What animal?",
        "answer_gt": "A dog.",
        "path": "a.wav",
        "task_name": "sound_QA",
        "dataset_name": "clotho",
        "uniq_id": 7,
    }
    written = files(
        "chat",
        [Example("sound_QA_clotho/a.wav", ("A dog.",), "What animal?", source=row)],
        ["A dog barking."],
    )
    assert list(written) == [AIRBENCH_FILE] == ["Chat_result_modelx.jsonl"]
    assert [json.loads(line) for line in written[AIRBENCH_FILE].splitlines()] == [
        {**row, "response": "A dog barking."}
    ]


def test_other_benchmarks_write_no_extra_files():
    assert files("classification", [Example("a.wav", ("dog",))], ["dog"]) == {}
