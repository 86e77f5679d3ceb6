"""Using a model set: ``--repository`` on every command that reads model sets (over
STYLEPROBE_MODEL_REPOSITORY), ``--threads`` after the subcommand too, and an input of
another size resized with a note in the output and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleprobe.cli import build_parser, run


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment names an empty repository: only --repository finds the tiny set."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(empty))
    monkeypatch.setenv("STYLEPROBE_PROBE_SAMPLES", "200")


@pytest.mark.parametrize("command", [
    ["explain", "x.png"], ["demo"], ["models"], ["cohort", "run", "folder"],
    ["evaluate", "--model-set", "tiny"],
    ["model-set", "add-classifier", "c.pt", "--base", "b", "--name", "n"],
])
def test_every_command_that_reads_model_sets_takes_repository(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--repository", "/some/where"])
    assert args.repository == "/some/where"


def test_models_reads_the_repository_option(tiny_repository: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models"]) == 2
    assert "--repository" in capsys.readouterr().err
    assert run(["models", "--repository", str(tiny_repository)]) == 0
    assert "tiny: 16x16" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--threads", "1", "explain", "x.png"],
                                  ["explain", "x.png", "--threads", "1"]])
def test_threads_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).threads == 1
    assert build_parser().parse_args(["explain", "x.png"]).threads is None


def test_a_wrong_size_input_is_resized_with_a_note(tiny_repository: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
                    ).save(image)
    assert run(["explain", str(image), "--model-set", "tiny", "--lambdas", "-2:2:5",
                "--repository", str(tiny_repository), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    note = "64x48 image centre-cropped to 48x48 and resized to 16x16"
    assert f"input: {note}" in printed.splitlines()[0]
    manifest = json.loads(Path(printed.split("manifest: ")[1].split()[0]).read_text())
    described = manifest["input"]["description"]
    assert (described["width"], described["height"]) == (64, 48)
    assert (described["model_width"], described["model_height"]) == (16, 16)
    assert described["fitted"].startswith(note)
