"""The model card shows how, where and how long each network was trained, the inversion
identity rows with their targets, and the generator's coverage of every oracle factor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.modelset import load_model_set
from styleprobe.training.modelcard import write_model_card


def test_card_has_training_record_identity_and_factor_coverage(tmp_path: Path) -> None:
    bundled = load_model_set(Path(DEFAULT_MODEL_REPOSITORY), "knee-oa")
    metrics = {**bundled.metrics, "identity_top1": 0.59, "identity_spread_ratio": 0.82,
               "generator_precision": 0.71, "generator_recall": 0.03, "coverage_samples": 2000,
               "factor_coverage": {"marker": {"coverage": 0.695, "real": "rate 0.305",
                                              "generated": "rate 0.000"}}}
    card = write_model_card(dataclasses.replace(bundled, metrics=metrics), tmp_path,
                            "samples.png").read_text()
    assert "Where: one NVIDIA H200" in card
    assert "| gan | 3295 iterations | 64 | 4.4 | `styleprobe train gan --data knee" in card
    assert "| encoder, fine-tuned (2-core CPU (session 3)) | 400 iterations |" in card
    assert "| 0.5900 | >= 0.9 — MISSED |" in card
    assert "Inversion spread" in card and "Generator recall" in card
    assert "(0.5 is perfect) | 0.7000 | <= 0.8 — met" in card
    assert "## Generator coverage of the oracle factors" in card
    assert "| marker | 0.695 | rate 0.305 | rate 0.000 |" in card


def test_card_without_record_or_coverage_leaves_those_sections_out(tmp_path: Path) -> None:
    bundled = load_model_set(Path(DEFAULT_MODEL_REPOSITORY), "knee-oa")
    bare = dataclasses.replace(bundled, training={"data": "knee"}, metrics={})
    card = write_model_card(bare, tmp_path, "samples.png").read_text()
    assert "Where:" not in card and "oracle factors" not in card
