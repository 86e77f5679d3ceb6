"""The measures of attributes against the oracle: purity, separation, nuisance movement and
the targets rows, on known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from styleprobe.evaluation.attributes import (
    attribute_blocks,
    attribute_targets,
    motion_summary,
    nuisance_movement,
    separation,
)
from styleprobe.evaluation.oracle import DISEASE_SCORE
from styleprobe.evaluation.traversals import Traversals


def test_purity_is_the_largest_category_change_over_the_sum() -> None:
    # the disease counts once, by its composite score, however many of its factors move
    summary = motion_summary({"joint_space_narrowing": -0.6, "osteophytes": 0.5,
                              DISEASE_SCORE: 0.6, "contrast": -0.3, "rotation": 0.1}, "knee")
    assert summary["factor"] == "joint_space_narrowing"
    assert summary["category"] == "disease"
    assert summary["category_changes"] == pytest.approx(
        {"disease": 0.6, "contrast": 0.3, "rotation": 0.1})
    assert summary["purity"] == pytest.approx(0.6)
    nuisance = motion_summary({"joint_space_narrowing": 0.1, "contrast": 0.9}, "knee")
    assert nuisance["category"] == "contrast" and nuisance["purity"] == pytest.approx(0.9)
    still = motion_summary({"contrast": 0.0, "rotation": 0.0}, "knee")
    assert still["purity"] == 0.0


def test_separation_names_the_attributes_of_each_category() -> None:
    found = [{"rank": 1, "category": "disease"}, {"rank": 2, "category": "contrast"},
             {"rank": 3, "category": "disease"}, {"rank": 4, "category": "marker"}]
    factors = ["joint_space_narrowing", "contrast", "rotation", "marker"]
    result = separation(found, "knee", factors)
    assert result["attributes_by_category"]["disease"] == [1, 3]
    assert result["attributes_by_category"]["rotation"] == []
    assert result["separate_categories"] == ["contrast", "disease", "marker"]
    assert result["disease_found"] and result["marker_found"]
    assert result["nuisances_found"] == ["contrast"]
    unreadable = separation(found[:2], "knee", factors[:3])
    assert unreadable["marker_readable"] is False and unreadable["marker_found"] is None


class FakeOracle:
    """What nuisance_movement reads of an oracle: its phantoms, factors and R²."""

    def __init__(self) -> None:
        self.phantoms = "knee"
        self.factors = ["joint_space_narrowing", "contrast", "rotation", DISEASE_SCORE]
        self.r2 = {"joint_space_narrowing": 0.9, "contrast": 0.9, "rotation": 0.2,
                   DISEASE_SCORE: 0.9}


def _traversals(contrast_slope: float) -> Traversals:
    lambdas = np.linspace(-2, 2, 5)
    n = 3
    readings = np.zeros((n, 5, 4))
    readings[:, :, 3] = lambdas  # the disease score rises 4 std over the range
    readings[:, :, 1] = contrast_slope * lambdas + np.array([0.0, 0.2, -0.2, 0.1, 0.0])
    readings[:, :, 2] = np.sin(lambdas * 3)  # unreadable (R² 0.2): never counted
    return Traversals(lambdas, np.zeros((n, 5)), readings, np.full(n, np.nan),
                      np.zeros((n, 1, 2, 2)))


def test_nuisance_movement_meets_the_goal_by_either_measure() -> None:
    oracle = FakeOracle()
    steady = nuisance_movement(_traversals(0.5), oracle)  # type: ignore[arg-type]
    assert steady["worst_nuisance"] == "contrast"
    assert steady["worst_nuisance_spearman"] > 0.3
    assert steady["nuisance_per_disease"] == pytest.approx(0.5)
    assert steady["met"] is False
    small = nuisance_movement(_traversals(0.1), oracle)  # type: ignore[arg-type]
    assert small["nuisance_per_disease"] == pytest.approx(0.1)
    assert small["met"] is True  # a steady but small drift: the ratio meets the goal


def test_a_disease_that_does_not_move_has_no_ratio() -> None:
    flat = _traversals(0.5)
    flat.readings[:, :, 3] = 0.0
    movement = nuisance_movement(flat, FakeOracle())  # type: ignore[arg-type]
    assert movement["nuisance_per_disease"] is None and movement["met"] is False


def _record(marker_found: bool | None, purity: float, plain: float, met: bool) -> dict:
    movement = {"worst_nuisance": "contrast", "worst_nuisance_spearman": 0.2,
                "largest_nuisance_change": "contrast", "nuisance_per_disease": 0.4,
                "disease_change": 1.0, "disease_spearman": 0.9, "met": met}
    return {
        "min_r2": 0.5, "mean_purity": purity,
        "attributes": {"attributes": [{"rank": 1, "name": "b8.conv0#3", "factor": "contrast",
                                       "category": "contrast", "purity": purity,
                                       "ranking_effect": 1.5}],
                       "settings": {"samples": 8}, "candidates": 720, "extent": 4.0,
                       "images": 24},
        "separation": {"separate_categories": ["contrast", "disease"], "disease_found": True,
                       "marker_found": marker_found},
        "directions": {"plain": {"factor": "joint_space_narrowing", "category": "disease",
                                 "purity": plain}},
        "conditional": {"samples": 4000, "auc": 0.9, "auc_unconstrained": 0.95, "images": 40,
                        "nuisance": movement, "compared": {"plain": movement}},
    }


def test_targets_rows_compare_with_the_direction() -> None:
    rows = {r["id"]: r for r in attribute_targets(_record(True, 0.6, 0.4, True))}
    assert set(rows) == {"attribute_purity", "attribute_separation", "conditional_nuisance"}
    assert rows["attribute_purity"]["met"] is True
    assert "0.400" in rows["attribute_purity"]["name"]
    assert rows["attribute_separation"]["met"] is True
    assert rows["conditional_nuisance"]["met"] is True
    missed = {r["id"]: r for r in attribute_targets(_record(None, 0.3, 0.4, False))}
    assert missed["attribute_purity"]["met"] is False
    assert missed["attribute_separation"]["met"] is None
    assert "reason" in missed["attribute_separation"]
    assert missed["conditional_nuisance"]["met"] is False


def test_report_section_lists_attributes_beside_the_direction() -> None:
    blocks = attribute_blocks(_record(True, 0.6, 0.4, True))
    tables = [content for kind, content in blocks if kind == "table"]
    attribute_rows = tables[0][1]
    assert attribute_rows[0][0] == "1. b8.conv0#3" and attribute_rows[-1][0] == "direction: plain"
    assert [row[0] for row in tables[1][1]] == ["conditional", "plain"]
    assert attribute_blocks(None) == []


def test_nothing_readable_is_not_measured_and_says_why() -> None:
    assert motion_summary({}, "knee")["purity"] is None
    record = _record(True, 0.6, 0.4, True)
    record["mean_purity"] = None
    record["conditional"]["nuisance"] = {
        "worst_nuisance": None, "worst_nuisance_spearman": None,
        "largest_nuisance_change": None, "nuisance_per_disease": None, "disease_change": 0.5,
        "disease_spearman": 0.8, "met": None}
    rows = {r["id"]: r for r in attribute_targets(record)}
    for name in ("attribute_purity", "conditional_nuisance"):
        assert rows[name]["met"] is None and "R²" in rows[name]["reason"]
    assert attribute_blocks(record)  # renders with the missing numbers


def test_a_conditional_direction_not_probed_says_why() -> None:
    record = _record(True, 0.6, 0.4, True)
    record["conditional"] = {"readers_r2": {}, "not_probed": "the readers read no nuisance"}
    rows = {r["id"]: r for r in attribute_targets(record)}
    assert rows["conditional_nuisance"]["met"] is None
    assert rows["conditional_nuisance"]["reason"] == "the readers read no nuisance"
    assert ("p", "Conditional direction not probed: the readers read no nuisance.") in (
        attribute_blocks(record))
