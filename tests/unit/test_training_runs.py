"""Training commands as a researcher runs them: stopped by a signal with a checkpoint and
resumed, resumes refused with other settings, progress readable in a log file, every
default in --help, and run.json in every run folder."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import Cli
from test_factors_csv import labelled

from styleprobe.cli import build_parser
from styleprobe.data.datasets import phantom_set, render
from styleprobe.training import classifier as classifier_module
from styleprobe.training.checkpoint import (
    CheckpointError,
    StopRequest,
    TrainingInterruptedError,
    load_checkpoint,
)
from styleprobe.training.classifier import (
    ClassifierTrainConfig,
    load_classifier,
    train_classifier,
)
from styleprobe.training.progress import Progress

torch.set_num_threads(1)
TINY_GAN = ["--resolution", "16", "--w-dim", "16", "--mapping-layers", "1",
            "--channel-base", "64", "--channel-max", "16", "--batch", "4"]





@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_checkpoint_and_the_same_command_resumes(
        tmp_path: Path, sig: signal.Signals, code: int) -> None:
    data, out = labelled(tmp_path / "data"), tmp_path / "run"
    command = [sys.executable, "-m", "styleprobe.cli", "--threads", "1", "train", "gan",
               "--data", str(data), *TINY_GAN, "--checkpoint-every", "100000",
               "--out", str(out)]
    with (tmp_path / "log").open("w") as log:
        proc = subprocess.Popen([*command, "--iterations", "100000"], stderr=log,
                                stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while (not (out / "run.json").exists() and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.1)  # run.json is written just before the first step
        time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "log").read_text()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    err = (tmp_path / "log").read_text()
    assert "Traceback" not in err and "\r" not in err
    step = load_checkpoint(out / "checkpoint.pt", kind="gan")["step"]
    assert 0 < step < 100000
    assert err.strip().splitlines()[-1] == (
        f"styleprobe: stopped by {sig.name} at step {step}; checkpoint saved to "
        f"{out / 'checkpoint.pt'}; run the same command again to resume")
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["step"]) == ("interrupted", step)

    done = subprocess.run([*command, "--iterations", str(step + 2)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"gan: resuming from step {step} of {step + 2}" in done.stderr
    assert load_checkpoint(out / "checkpoint.pt", kind="gan")["step"] == step + 2
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["step"]) == ("finished", step + 2)
    assert [(s["from_step"], s["to_step"], s["status"]) for s in record["sessions"]] == [
        (0, step, "interrupted"), (step, step + 2, "finished")]


def test_a_resume_with_other_architecture_is_refused(cli: Cli, tmp_path: Path) -> None:
    data, out = labelled(tmp_path / "data"), tmp_path / "run"
    base = ["train", "gan", "--data", data, "--out", out]
    assert cli(*base, *TINY_GAN, "--iterations", 1)[0] == 0
    code, _, err = cli(*base, "--resolution", 32, "--w-dim", 8, "--channel-max", 16,
                       "--iterations", 2)
    assert code == 2
    assert err.strip().splitlines() == [
        f"styleprobe: error: {out / 'checkpoint.pt'} was trained with other settings: "
        "--resolution 32 (checkpoint: 16), --w-dim 8 (checkpoint: 16); drop or match them "
        "to resume, or --restart to start over"]
    code, out_text, err = cli(*base, "--iterations", 2)  # the checkpoint's settings
    assert code == 0 and "gan: resuming from step 1 of 2" in err
    assert "gan checkpoint at step 2" in out_text


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    group = train.choices["train"]
    sub = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["gan", "encoder", "classifier"])
def test_help_shows_every_default(command: str) -> None:
    parser = subcommands()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.required or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action) or ""  # type: ignore[attr-defined]
        assert "default" in text, (command, action.option_strings, text)
    shown = parser.format_help()
    expected = {"gan": ["default: 512", "default: 4096", "(default: 2000)", "(default: 100)"],
                "encoder": ["(default: 3000)", "(default: 10240)", "(default: 200)"],
                "classifier": ["(default: 300)", "default: use --steps"]}[command]
    flat = " ".join(shown.split())
    assert all(e in flat for e in expected), flat


def test_progress_in_a_log_file_is_plain_lines() -> None:
    stream = io.StringIO()
    with Progress(5, "phase", unit="pairs", stream=stream, every_s=0) as bar:
        for _ in range(5):
            bar.update(1, loss=0.25)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 6
    assert lines[-1].startswith("phase: 5/5 pairs (") and lines[-1].endswith(" loss=0.25")


def test_the_encoders_bank_shows_progress(cli: Cli, tmp_path: Path) -> None:
    data = labelled(tmp_path / "data")
    assert cli("train", "gan", "--data", data, *TINY_GAN, "--iterations", 1,
               "--out", tmp_path / "gan")[0] == 0
    code, _, err = cli("train", "encoder", "--data", data, "--gan",
                       tmp_path / "gan" / "checkpoint.pt", "--bank-size", 64,
                       "--iterations", 2, "--out", tmp_path / "enc")
    assert code == 0, err
    assert "encoder: generated pairs: 64/64 pairs" in err and "\r" not in err
    assert "encoder: 2/2 it" in err
    record = json.loads((tmp_path / "enc" / "run.json").read_text())
    assert record["status"] == "finished" and "pixel_mse_real" in record["metrics"]


def test_classifier_run_records_command_versions_data_and_metrics(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = tmp_path / "knee", tmp_path / "clf"
    assert cli("data", "make", "knee", "--n", 40, "--size", 16, "--out", folder)[0] == 0
    args = ["train", "classifier", "--data", str(folder), "--resolution", "16",
            "--steps", "3", "--class-names", "healthy,OA", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/styleprobe", *args])  # as the console script
    code, _, err = cli(*args)
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "classifier"
    assert record["command"] == f"styleprobe train classifier --data {folder} --resolution 16 " \
        f"--steps 3 --class-names healthy,OA --out {out}"
    assert record["options"]["steps"] == 3
    assert set(record["versions"]) >= {"styleprobe", "torch"}
    table = hashlib.sha256((folder / "factors.csv").read_bytes()).hexdigest()
    assert record["data"]["factors_sha256"] == table and record["data"]["images"] == 40
    assert record["started_at"] <= record["ended_at"]
    assert (record["status"], record["step"]) == ("finished", 3)
    assert record["metrics"]["test_size"] == 8


@contextmanager
def stop_at_once() -> Iterator[StopRequest]:
    yield StopRequest(signal.SIGINT)


def test_an_interrupted_classifier_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    data = render(phantom_set("knee", seed=0, size=16), 32)
    cfg = ClassifierTrainConfig(steps=4, batch=8, width=8)
    reference = train_classifier(data, data, ["healthy", "OA"], tmp_path / "ref", cfg)

    with monkeypatch.context() as patched:
        patched.setattr(classifier_module, "stop_on_signals", stop_at_once)
        with pytest.raises(TrainingInterruptedError) as stopped:
            train_classifier(data, data, ["healthy", "OA"], tmp_path / "run", cfg)
    assert stopped.value.step == 1 and stopped.value.exit_code == 130
    with pytest.raises(CheckpointError, match="unfinished"):
        load_classifier(tmp_path / "run" / "classifier.pt")
    resumed = train_classifier(data, data, ["healthy", "OA"], tmp_path / "run", cfg)
    assert resumed == reference
    a, b = (load_classifier(p / "classifier.pt")[0].state_dict()
            for p in (tmp_path / "ref", tmp_path / "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


class Saves:
    """A stand-in run record that notes the steps of each update."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str]] = []

    def update(self, step: int, status: str = "running", metrics: object = None) -> None:
        self.steps.append((step, status))


def test_checkpoint_interval_is_configurable(tmp_path: Path) -> None:
    data = render(phantom_set("knee", seed=0, size=16), 32)
    saves = Saves()
    train_classifier(data, data, ["healthy", "OA"], tmp_path,
                     ClassifierTrainConfig(steps=5, batch=8, width=8), checkpoint_every=2,
                     record=saves)  # type: ignore[arg-type]
    assert saves.steps == [(2, "running"), (4, "running"), (5, "finished")]
    assert np.isfinite(load_classifier(tmp_path / "classifier.pt")[1]["metrics"]["test_auc"])
