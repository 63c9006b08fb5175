"""The package declares what it needs: every runtime pin of requirements.txt is a dependency of
pyproject.toml, every test pin is in its `test` extra, and the extras a pod or GPU needs exist."""

import re
import tomllib

from tests.support.paths import ROOT


def names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[<>=\[ ;]", r.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
    }


def pinned() -> tuple[set[str], set[str]]:
    """(runtime, test) package names of requirements.txt (test ones follow its '# tests' line)."""
    runtime, test, section = [], [], None
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("# tests"):
            section = test
        elif line.strip() and not line.startswith("#"):
            (section if section is not None else runtime).append(line.split("#")[0])
    return names(runtime), names(test)


def test_every_pinned_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = pinned()
    assert runtime <= names(project["dependencies"]), runtime - names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert test <= names(extras["test"]), test - names(extras["test"])
    assert {"test", "tpu", "cuda", "demo"} <= set(extras)


def test_tensorboard_reads_a_runs_logs(listening_workdir):
    """Set-up installs TensorBoard, and it opens what the trainer writes."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(listening_workdir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
