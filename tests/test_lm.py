"""`python -m mats_jax.lm`: prints a continuation; bad input is one line on stderr and exit 1."""

import subprocess
import sys

import pytest

from mats_jax.lm import main
from tests.support.models import tiny_llama_folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny") / "hf")


def test_generates_from_a_hugging_face_folder(tiny_checkpoint, capsys):
    assert (
        main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--prompt",
                "Hello",
                "--max-new-tokens",
                "5",
                "--num-beams",
                "2",
                "--no-repeat-ngram-size",
                "2",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, tmp: ["--gguf", str(tmp / "missing.gguf")], "missing.gguf"),
        (lambda d, tmp: ["--gguf", str(tmp / "text.gguf")], "text.gguf"),
        (lambda d, tmp: ["--checkpoint", str(tmp)], "config.json"),
        (
            lambda d, tmp: ["--checkpoint", str(d), "--max-new-tokens", "5000"],
            "exceeds the model's context",
        ),
    ],
    ids=["missing-file", "not-gguf", "folder-without-model", "prompt-too-long"],
)
def test_bad_input_is_one_clear_line(tiny_checkpoint, tmp_path, capsys, make_args, message):
    (tmp_path / "text.gguf").write_text("hello")
    assert main(make_args(tiny_checkpoint, tmp_path) + ["--prompt", "Hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_command_line_exit_status_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mats_jax.lm",
            "--gguf",
            str(tmp_path / "nope.gguf"),
            "--prompt",
            "Hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope.gguf" in result.stderr
