"""``styleprobe evaluate`` end to end on the tiny model set: the report's structure, every
number finite and in range, the results table; and clear errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from styleprobe.cli import run
from styleprobe.evaluation.bias import ShortcutConfig

SECTIONS = ("table", "inversion", "identity", "coverage", "directions", "validity",
            "faithfulness", "localization", "bias", "attributes", "targets", "timings_s")


@pytest.fixture
def evaluation_env(tiny_repository: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("STYLEPROBE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("STYLEPROBE_EVALUATION_DIR", str(tmp_path / "cache"))
    return tmp_path


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{path}[{i}]")]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    return [(path, float(value))]


@pytest.fixture(scope="module")
def report(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small evaluation of the tiny set (knee phantoms at 16 px), run by the CLI."""
    root = tmp_path_factory.mktemp("evaluation")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
        env.setenv("STYLEPROBE_STORE_DIR", str(root / "store"))
        env.setenv("STYLEPROBE_EVALUATION_DIR", str(root / "cache"))
        code = run(["evaluate", "--model-set", "tiny", "--phantoms", "knee", "--n", "16",
                    "--probe-samples", "200", "--training-samples", "128",
                    "--out", str(root / "out"), "--results-table", str(root / "results.md")])
    assert code == 0
    return root


def test_report_has_every_section_and_file(report: Path) -> None:
    folder = report / "out" / "tiny"
    results = json.loads((folder / "report.json").read_text())
    assert all(section in results for section in SECTIONS)
    assert set(results["validity"]) == {"plain", "orthogonalized"}
    assert results["settings"]["orthogonalized_against"] == ["exposure", "rotation"]
    assert {t["id"] for t in results["targets"]} >= {
        "latent_auc_gap", "flip_rate", "localization", "shortcut", "attribute_purity",
        "attribute_separation", "conditional_nuisance"}
    assert len(results["attributes"]["attributes"]["attributes"]) == 5
    assert all(t["met"] in (True, False, None) for t in results["targets"])
    assert all(t["reason"] for t in results["targets"] if t["met"] is None)
    # The tiny set's marker-reading shortcut classifier may call too few generated samples
    # positive to probe a direction: then the report says why instead of showing one.
    probed = results["bias"]["direction"] is not None
    bias_figures = ("bias", "bias_motion") if probed else ()
    for name in ("probability", "flip_lambdas", "faithfulness", "localization", *bias_figures):
        assert (folder / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (folder / "report.md").read_text()
    assert "## 6. Bias discovery" in markdown and "figures/localization.png" in markdown
    assert probed or "could not be probed: the generator draws" in markdown
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 + len(bias_figures)


def test_report_numbers_are_finite_and_in_range(report: Path) -> None:
    results = json.loads((report / "out" / "tiny" / "report.json").read_text())
    numbers = _numbers(results)
    assert numbers and all(math.isfinite(v) for _, v in numbers)
    for path, value in numbers:
        name = path.rsplit(".", 1)[-1]
        if "auc" in name or name in ("flip_rate", "agreement", "ssim", "pointing_game",
                                     "realism_accuracy", "monotonic_share"):
            assert -1.0 <= value <= 1.0 if name == "ssim" else 0.0 <= value <= 1.0, path
        if "spearman" in name:
            assert -1.0 <= value <= 1.0, path
    table = results["table"]
    assert 0.0 <= table["latent_auc_sampled"] <= 1.0
    assert results["bias"]["shortcut_rate"] == ShortcutConfig().rate
    assert results["localization"]["gradcam"] is not None


def test_results_table_sets_numbers_next_to_the_paper(report: Path) -> None:
    text = (report / "results.md").read_text()
    assert "| Classifier test AUC | 0.890 |" in text
    assert "## Misses and what would fix them" in text
    assert "[tiny](out/tiny/report.md)" in text


@pytest.mark.parametrize("arguments, message", [
    (["--model-set", "nope"], "unknown model set"),
    (["--model-set", "tiny", "--phantoms", "knee", "--n", "3"], "at least 10"),
    (["--model-set", "tiny", "--phantoms", "knee", "--lambdas", "3:-3:5"], "λ grid"),
    (["--model-set", "tiny"], "--phantoms"),
    (["--model-set", "tiny", "--phantoms", "histology"], "channel"),
])
def test_bad_input_is_one_line_and_exit_2(evaluation_env: Path, arguments: list[str],
                                          message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["evaluate", *arguments, "--out", str(evaluation_env / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (evaluation_env / "out").exists()
