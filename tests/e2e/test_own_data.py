"""The README's own-data recipe ("A quick try on a folder of your own"), run as written on
a domain the project did not design: 32×32 grayscale images of one bright blob on a noisy
background, whose size decides the label (small, large), with brightness and position as
nuisance factors. The GAN's training is interrupted with SIGINT and resumed; then the
encoder, the classifier, the export (twice: the second needs --force), an explanation and
a cohort. About 2 minutes on 2 CPU cores."""

from __future__ import annotations

import csv
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleprobe.config import REPO_ROOT
from styleprobe.modelset import load_model_set
from styleprobe.training.export import BALANCE_MARGIN

pytestmark = pytest.mark.slow
STYLEPROBE = [sys.executable, "-m", "styleprobe.cli"]
SIZE = 32


def readme_recipe() -> list[list[str]]:
    """The commands of the README's quick-try block, each as its arguments."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("A quick try on a folder of your own", 1)[1].split("```bash\n", 1)[1]
    lines = block.split("\n```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line) for line in lines.splitlines() if line.strip()]


def blobs(folder: Path, n: int, seed: int) -> None:
    """``n`` blob images with ``factors.csv``: label 1 (large) for a radius of 5-7.5."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rows = []
    for i in range(n):
        label = i % 2
        radius = rng.uniform(5.0, 7.5) if label else rng.uniform(2.0, 3.5)
        x, y = rng.uniform(10, 22, size=2)
        brightness = rng.uniform(0.6, 1.0)
        image = rng.normal(0.15, 0.04, (SIZE, SIZE))
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = brightness
        name = f"blob{i:04d}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / name)
        rows.append([name, label, f"{brightness:.3f}", f"{x:.2f}", f"{y:.2f}"])
    with (folder / "factors.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "brightness", "x", "y"], *rows])


def test_the_readme_recipe_on_a_folder_of_ones_own(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(empty))  # only --repository finds it
    blobs(tmp_path / "data" / "blobs", 300, seed=0)
    blobs(tmp_path / "data" / "blobs-held", 80, seed=1)
    gan, encoder, classifier, export, explain, cohort = readme_recipe()
    assert [c[:4] for c in (gan, encoder, classifier)] == [
        ["styleprobe", "--threads", "2", "train"]] * 3
    assert (export[3], explain[3], cohort[3:5]) == ("export", "explain", ["cohort", "run"])

    def styleprobe(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*STYLEPROBE, *command[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)

    # GAN: interrupted by SIGINT mid-way, then the same command resumes
    runs = tmp_path / "runs" / "blobs"
    with (tmp_path / "gan.log").open("w") as log:
        proc = subprocess.Popen([*STYLEPROBE, *gan[1:]], cwd=tmp_path, stderr=log,
                                stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (runs / "gan" / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # some steps, far fewer than 400
        assert proc.poll() is None, (tmp_path / "gan.log").read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    stopped = (tmp_path / "gan.log").read_text()
    step = int(re.search(r"stopped by SIGINT at step (\d+)", stopped).group(1))
    assert 0 < step < 400 and "Traceback" not in stopped
    resumed = styleprobe(gan)
    assert resumed.returncode == 0, resumed.stderr
    assert f"gan: resuming from step {step} of 400" in resumed.stderr

    for command in (encoder, classifier):
        done = styleprobe(command)
        assert done.returncode == 0, done.stderr

    # export: run records into the manifest and card, nuisances from factors.csv, balance
    exported = styleprobe(export)
    assert exported.returncode == 0, exported.stderr
    model_set = load_model_set(tmp_path / "my_models", "blobs", verify=True)
    training, metrics = model_set.training, model_set.metrics
    assert training["data"] == "blobs" and training["data_fingerprint"]["images"] == 300
    assert training["held_out"] == {"data": "blobs-held", "images": 80}
    assert training["generator"]["run"]["sessions"] == 2
    assert training["generator"]["run"]["status"] == "finished"
    assert training["classifier"]["run"]["metrics"]["test_auc"] > 0.9
    assert sorted(model_set.nuisance_directions) == ["brightness", "x", "y"]
    generated, data = metrics["generator_coverage"], metrics["data_class_shares"]
    assert set(generated) == set(data) == {"small", "large"} and data["large"] == 0.5
    off = [name for name in data if abs(generated[name] - data[name]) > BALANCE_MARGIN]
    warnings = [line for line in exported.stderr.splitlines() if "warning: the generator" in line]
    assert len(warnings) == len(off)
    card = (tmp_path / "my_cards" / "blobs.md").read_text()
    assert "Trained on `blobs`" in card and "| class | generated share | data share |" in card
    for command in (gan, encoder, classifier, export):
        assert shlex.join(["styleprobe", *command[1:]]) in card
    assert "make models" not in card

    again = styleprobe(export)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "--force" in again.stderr
    assert styleprobe([*export, "--force"]).returncode == 0

    # explain, with the set's repository given by --repository
    explained = styleprobe(explain)
    assert explained.returncode == 0, explained.stderr
    assert "model set blobs, target large" in explained.stdout
    assert "reliability:" in explained.stdout and "report: " in explained.stdout
    big = tmp_path / "big.png"
    Image.open(tmp_path / "data" / "blobs-held" / "blob0001.png").resize((64, 64)).save(big)
    resized = styleprobe([*explain[:4], str(big), *explain[5:]])
    assert resized.returncode == 0, resized.stderr
    assert resized.stdout.startswith("input: 64x64 image resized to 32x32")

    # cohort: the probe's progress first, then every image
    summary = styleprobe(cohort)
    assert summary.returncode == 0, summary.stderr
    assert "direction probe" in summary.stderr and "images: 80/80" in summary.stderr
    assert "80 images: 80 explained, 0 failed" in summary.stdout
    assert json.loads(exported.stdout)["model_set"] == "blobs"
    print(f"own-data recipe: {time.monotonic() - started:.0f} s")
