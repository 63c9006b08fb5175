"""User corpora: streaming JSONL/CSV readers, malformed rows reported as file:line and skipped."""

import gzip
import logging

import pytest

from mats_jax.data.records import caption
from mats_jax.data.rows import read_csv, read_jsonl

GOOD = caption("A dog barks", dataset="mine", source="mine")


def test_jsonl_malformed_rows_are_reported_with_file_and_line_and_counted(tmp_path, caplog):
    path = tmp_path / "user.jsonl"
    lines = [
        GOOD.to_json(),
        "{not json",
        "",  # blank lines are not rows
        '["a", "list"]',
        GOOD.to_json().replace('"caption"', '"captioning"'),
        GOOD.to_json().replace('"answer": "A dog barks", ', ""),
        GOOD.to_json(),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n")
    rows = read_jsonl(path)
    with caplog.at_level(logging.WARNING, logger="mats_jax.data.rows"):
        got = list(rows)
    assert got == [GOOD, GOOD]
    assert rows.tally.malformed == 5
    messages = [r.getMessage() for r in caplog.records]
    expected = [
        (2, "invalid JSON"),
        (4, "expected a JSON object"),
        (5, "unknown task"),
        (6, "missing field(s) answer"),
        (8, "not UTF-8"),
    ]
    for line, reason in expected:
        assert any(m.startswith(f"{path}:{line}: {reason}") for m in messages), (line, messages)
    assert messages[-1] == f"{path}: skipped 5 malformed row(s)"


def test_jsonl_gzip_and_default_source(tmp_path):
    path = tmp_path / "user.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(
            '{"text": "t", "task": "qa", "instruction": "Is it loud?", "answer": "Yes", '
            '"tag": "[audio qa]"}\n'
        )
    (record,) = read_jsonl(path, source="mine")
    assert (record.source, record.answer, record.clip) == ("mine", "Yes", "")


def test_csv_rows_with_multiline_fields_keep_physical_line_numbers(tmp_path, caplog):
    path = tmp_path / "user.csv"
    path.write_text(
        "text,task,instruction,answer,tag,source,notes\n"
        'A dog barks,caption,Describe it.,"A dog\nbarks",[audio caption mine],mine,x\n'
        "too,few,fields\n"
        "A cat,caption,Describe it.,A cat,[audio caption mine],mine,x,surplus\n"
        "A cat,caption,Describe it.,,[audio caption mine],mine,x\n"
        "A cat,caption,Describe it.,A cat,,mine,x\n"
    )
    rows = read_csv(path)
    with caplog.at_level(logging.WARNING, logger="mats_jax.data.rows"):
        got = list(rows)
    assert [r.answer for r in got] == ["A dog\nbarks", "A cat"]
    assert rows.tally.malformed == 3
    messages = [r.getMessage() for r in caplog.records]
    assert f"{path}:4: 3 fields, expected 7" in messages
    assert f"{path}:5: 8 fields, expected 7" in messages
    assert f"{path}:6: empty 'answer'" in messages


def test_csv_without_the_schema_columns_is_an_error(tmp_path):
    path = tmp_path / "user.csv"
    path.write_text("text,answer\nA dog,A dog\n")
    with pytest.raises(ValueError, match="expected column"):
        list(read_csv(path))


@pytest.mark.parametrize("reader", [read_jsonl, read_csv])
def test_missing_file_is_an_error_when_the_reader_is_made(tmp_path, reader):
    with pytest.raises(FileNotFoundError, match="missing input file.*nope"):
        reader(tmp_path / "nope")


def test_readers_stream(tmp_path):
    """A reader holds no rows: iterating it twice reads the file twice (and sees a change)."""
    path = tmp_path / "user.jsonl"
    path.write_text(GOOD.to_json() + "\n")
    rows = read_jsonl(path)
    assert len(list(rows)) == 1
    path.write_text((GOOD.to_json() + "\n") * 3)
    assert len(list(rows)) == 3
