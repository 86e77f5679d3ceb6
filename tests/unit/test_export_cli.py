"""``styleprobe export`` takes what a user has: a classifier as TorchScript or as a
checkpoint; a bad file is one line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from styleprobe.cli import run
from styleprobe.config import DEFAULT_MODEL_REPOSITORY, REPO_ROOT
from styleprobe.modelset import load_model_set

SET = "histology-tumour"  # the smaller bundled set (32x32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled set's networks as training checkpoints, and 40 held-out patches."""
    out = tmp_path_factory.mktemp("export-cli")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "services")}
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "checkpoints_from_model_set.py"),
                    SET, "--repository", str(DEFAULT_MODEL_REPOSITORY), "--runs", str(out)],
                   check=True, capture_output=True, env=env)
    assert run(["data", "make", "histology", "--n", "40", "--size", "32", "--out",
                str(out / "held")]) == 0
    return out


def export(runs: Path, tmp_path: Path, classifier: Path, *extra: str) -> int:
    return run(["export", "--name", "mine", "--gan", str(runs / SET / "gan" / "checkpoint.pt"),
                "--encoder", str(runs / SET / "encoder" / "encoder.pt"), "--classifier",
                str(classifier), "--data", str(runs / "held"), "--channels", "3",
                "--repository", str(tmp_path / "repository"), "--card-dir",
                str(tmp_path / "cards"), "--class-samples", "200", *extra])


def test_a_torchscript_classifier_is_exported_with_its_class_names(runs: Path,
                                                                   tmp_path: Path) -> None:
    scripted = DEFAULT_MODEL_REPOSITORY / f"{SET}-classifier" / "1" / "model.pt"
    assert export(runs, tmp_path, scripted, "--class-names", "normal,tumour") == 0
    model_set = load_model_set(tmp_path / "repository", "mine", verify=True)
    assert model_set.classifier.class_names == ["normal", "tumour"]
    assert model_set.training["classifier"]["kind"] == "torchscript"


def test_a_checkpoint_classifier_still_works(runs: Path, tmp_path: Path) -> None:
    assert export(runs, tmp_path, runs / SET / "classifier" / "classifier.pt") == 0
    model_set = load_model_set(tmp_path / "repository", "mine", verify=True)
    assert model_set.training["classifier"]["kind"] == "checkpoint"


@pytest.mark.parametrize(("which", "words"), [
    ("classifier", "neither a TorchScript classifier"),
    ("gan", "junk.pt is unreadable"),
    ("encoder", "junk.pt is unreadable"),
])
def test_a_bad_file_is_one_line_and_exit_2(runs: Path, tmp_path: Path, which: str, words: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model")
    args = {"gan": runs / SET / "gan" / "checkpoint.pt",
            "encoder": runs / SET / "encoder" / "encoder.pt",
            "classifier": runs / SET / "classifier" / "classifier.pt", which: junk}
    code = run(["export", "--name", "mine", "--gan", str(args["gan"]), "--encoder",
                str(args["encoder"]), "--classifier", str(args["classifier"]), "--data",
                str(runs / "held"), "--channels", "3", "--repository",
                str(tmp_path / "repository")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert words in err
    assert not (tmp_path / "repository").exists()


def test_torchscript_without_class_names_is_refused(runs: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    scripted = DEFAULT_MODEL_REPOSITORY / f"{SET}-classifier" / "1" / "model.pt"
    assert export(runs, tmp_path, scripted) == 2
    assert "--class-names" in capsys.readouterr().err


def test_too_few_class_samples_are_refused(runs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = runs / SET / "classifier" / "classifier.pt"
    assert export(runs, tmp_path, checkpoint, "--class-samples", "10") == 2
    assert "--class-samples must be at least 100, got 10" in capsys.readouterr().err
    assert not (tmp_path / "repository").exists()


def test_a_second_export_of_the_same_version_needs_force(
        runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = runs / SET / "classifier" / "classifier.pt"
    assert export(runs, tmp_path, checkpoint) == 0
    capsys.readouterr()
    assert export(runs, tmp_path, checkpoint) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "version 1 exists" in err and "--force" in err
    assert export(runs, tmp_path, checkpoint, "--version", "2") == 0
    assert export(runs, tmp_path, checkpoint, "--force") == 0


def test_the_card_reports_class_balance_and_folder_nuisances(runs: Path,
                                                             tmp_path: Path) -> None:
    assert export(runs, tmp_path, runs / SET / "classifier" / "classifier.pt") == 0
    model_set = load_model_set(tmp_path / "repository", "mine")
    shares = model_set.metrics["data_class_shares"]
    assert set(shares) == set(model_set.metrics["generator_coverage"]) == {"normal", "tumour"}
    factors = (runs / "held" / "factors.csv").read_text().splitlines()[0].split(",")
    assert sorted(model_set.nuisance_directions) == sorted(
        c for c in factors if c not in ("file", "label"))
    card = (tmp_path / "cards" / "mine.md").read_text()
    assert "| class | generated share | data share |" in card
    assert "No run record" in card and "make models" not in card
    assert model_set.metrics["generator_coverage_samples"] == 200
