"""A bad count on an argparse entry point is a one-line usage error naming the flag (exit 2),
not a traceback (--batch-size 0) or a silent empty run (--batch-size -3)."""

import pytest

from mats_jax import embed, evaluate, export, generate


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (
            generate.main,
            ["--workdir", "w", "--audio", "a", "--batch-size", "0"],
            "argument --batch-size: expected an integer >= 1, got '0'",
        ),
        (
            generate.main,
            ["--workdir", "w", "--audio", "a", "--batch-size", "-3"],
            "argument --batch-size: expected an integer >= 1, got '-3'",
        ),
        (
            generate.main,
            ["--workdir", "w", "--audio", "a", "--step", "-1"],
            "argument --step: expected an integer >= 0, got '-1'",
        ),
        (
            evaluate.main,
            ["--workdir", "w", "--benchmark", "esc50", "--data", "d", "--limit", "x"],
            "argument --limit: expected an integer >= 1, got 'x'",
        ),
        (
            evaluate.main,
            ["--workdir", "w", "--benchmark", "esc50", "--data", "d", "--max-new-tokens", "0"],
            "argument --max-new-tokens: expected an integer >= 1, got '0'",
        ),
        (
            export.main,
            ["--workdir", "w", "--format", "hf-peft", "--out", "o", "--step", "1.5"],
            "argument --step: expected an integer >= 0, got '1.5'",
        ),
        (
            embed.main,
            ["--batch-size", "0"],
            "argument --batch-size: expected an integer >= 1, got '0'",
        ),
    ],
)
def test_a_bad_count_is_a_usage_error_naming_the_flag(main, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
