"""The embedded pipeline on the bundled model sets, end to end:

- For 20 held-out phantoms with disease that the classifier calls diseased (an
  explanation explains a prediction), the target probability falls monotonically as the
  traversal moves from the input towards healthy (λ from 0 down to the grid's end:
  Spearman of the steps taken against the probability ≤ -0.9 for most of them), and the
  flip towards healthy is found for at least 90 %. (Beyond the decision boundary, and on
  the side of more disease, frames leave the generator's domain and the probability
  saturates or wanders, so the whole grid is not the measure.)
- pydicom's CT and MR files (and a JPEG 2000 one) go through without error and are
  flagged unreliable: they are out of the knee set's domain.
- ``styleprobe demo`` explains a knee with clear disease and points at the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from scipy.stats import spearmanr

from styleprobe.backends.local import LocalBackend
from styleprobe.cli import run
from styleprobe.cli.train import HELD_OUT_SEED
from styleprobe.config import Settings
from styleprobe.data.datasets import phantom_set
from styleprobe.explain.engine import Explainer
from styleprobe.explain.inputs import to_model_layout
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.modelset import manifest_path
from styleprobe.storage.local import LocalStore

REPOSITORY = Path(Settings.from_env().model_repository)
PHANTOMS = {"knee-oa": "knee", "histology-tumour": "histology"}
DISEASED = 20
PROBE = ProbeSettings(samples=2000)  # held-out direction AUC > 0.99 on both bundled sets
MONOTONE_SHARE, FLIP_SHARE = 0.8, 0.9

pytestmark = pytest.mark.slow


def needs(name: str) -> None:
    if not manifest_path(REPOSITORY, name).is_file():
        pytest.skip(f"bundled model set {name} is not exported yet "
                    f"({manifest_path(REPOSITORY, name)} does not exist)")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact folder for the module, so each set's direction is probed once."""
    return tmp_path_factory.mktemp("bundled-artifacts")


def towards_healthy(result: ExplanationResult) -> float:
    """Spearman correlation of the steps from λ = 0 towards healthy (decreasing λ, which
    lowers the target) with the target probability of those frames."""
    lambdas, probabilities = np.asarray(result.lambdas), np.asarray(result.probabilities)
    half = lambdas <= 0
    return float(spearmanr(-lambdas[half], probabilities[half]).statistic)


@pytest.mark.parametrize("name", ["knee-oa", "histology-tumour"])
def test_diseased_phantoms_move_to_healthy_and_flip(name: str, store_dir: Path) -> None:
    needs(name)
    backend = LocalBackend(REPOSITORY, name)
    target = backend.model_set.default_target
    phantoms = phantom_set(PHANTOMS[name], seed=HELD_OUT_SEED,
                           size=backend.model_set.preprocessing.resolution)
    prep, threshold = backend.model_set.preprocessing, backend.model_set.classifier.threshold
    class_index = backend.model_set.classifier.class_index(target)
    sick = [s for s in map(phantoms.sample, range(400)) if s.label == 1]
    called_sick = target_probability(
        backend.classifier(to_model_layout(np.stack([s.image for s in sick]), prep)), class_index)
    diseased = [s for s, p in zip(sick, called_sick, strict=True) if p >= threshold][:DISEASED]
    explainer = Explainer(backend, LocalStore(store_dir))
    spec = JobSpec.create(backend.model_set, target, probe=PROBE)
    results = [explainer.explain(s.image, spec) for s in diseased]
    rhos = [towards_healthy(r) for r in results]
    monotone = sum(rho <= -0.9 for rho in rhos)
    flipped = sum(r.flip.found and r.flip.side == "negative" for r in results)
    summary = (f"{name}: direction AUC {results[0].direction.auc:.3f}; Spearman "
               f"{[round(r, 2) for r in rhos]}; flips {flipped}/{len(results)} at "
               f"{[r.flip.at_lambda and round(r.flip.at_lambda, 2) for r in results]}; "
               f"unreliable {sum(r.unreliable for r in results)}")
    assert len(results) == DISEASED, summary
    assert monotone >= MONOTONE_SHARE * DISEASED, summary
    assert flipped >= FLIP_SHARE * DISEASED, summary


@pytest.mark.parametrize("dicom", ["CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm"])
def test_dicom_goes_through_and_is_flagged_out_of_domain(dicom: str, store_dir: Path) -> None:
    needs("knee-oa")
    backend = LocalBackend(REPOSITORY, "knee-oa")
    result = Explainer(backend, LocalStore(store_dir)).explain(
        Path(get_testdata_file(dicom)), JobSpec.create(backend.model_set, probe=PROBE))
    assert result.unreliable, result.quality
    assert any("pixel MSE" in reason for reason in result.quality.reasons)
    assert "UNRELIABLE" in LocalStore(store_dir).get(result.outputs["report"]).decode()


def test_demo_points_at_the_report(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs("knee-oa")
    code = run(["demo", "--out", str(store_dir), "--probe-samples", str(PROBE.samples)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = Path(printed.split("report: ")[1].split()[0])
    assert report.is_file() and "KL grade 4" in printed
    assert "P(OA) on the input" in printed
