"""The experiment report (aiml024.runtime.report): one self-contained HTML page with every
section, nothing fetched from anywhere, every data string escaped, each section degrading when
its data is absent. Its inputs come from the real search and evaluate steps, run in-process."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.unit.test_evidence import with_age_band
from tests.unit.test_search import TYPES, churn_like, spec, step_params

from aiml024.api.step_params import EvaluateParams
from aiml024.runtime.bundle import load_bundle
from aiml024.runtime.report import FAIRNESS_LIMIT, History, Holdout, load_history, render_report
from aiml024.runtime.steps import evaluate as evaluate_step
from aiml024.runtime.steps import parse_params, study_name
from aiml024.runtime.steps import search as search_step

EVIL = "<script>alert(1)</script>"  # a column name a user could give
ROWS = 600
# Generous, so a busy machine neither cuts trials short nor skips explanations (the search
# stops at its trial cap in seconds).
BUDGET = 900
BINARY_SECTIONS = (
    "summary",
    "leaderboard",
    "search-history",
    "shap",
    "permutation-importance",
    "partial-dependence",
    "calibration",
    "fairness",
    "confusion-matrix",
    "counterfactuals",
)


def report_inputs(
    root: Path, clean: pd.DataFrame, the_spec: dict[str, Any], types: dict[str, str]
) -> dict[str, Any]:
    """Search then evaluate `clean` under `root`; what render_report takes, as evaluate has it:
    the card, the explanations, the study's history and the holdout's truth and predictions."""
    (root / "in").mkdir(parents=True)
    clean.to_parquet(root / "in" / "clean")
    params = step_params(the_spec, rows=len(clean), types=types)
    params["search"] = search_step.run(params, root / "in", root / "in")
    evaluate_step.run(params, root / "in", root / "out")
    card = json.loads((root / "out" / "card" / "model_card.json").read_text())
    explanations = json.loads((root / "out" / "card" / "explanations.json").read_text())
    history = load_history(
        root / "in" / "search" / "study.journal", study_name(parse_params(EvaluateParams, params))
    )
    split = json.loads((root / "in" / "search" / "split.json").read_text())
    rows = clean.iloc[split["holdout"]]
    bundle = load_bundle(root / "out" / "bundle")
    predicted = bundle.predict(rows)
    target = the_spec["target"]
    if card["task"] == "regression":
        holdout = Holdout(rows[target].tolist(), predicted["score"].tolist())
    else:
        holdout = Holdout(rows[target].tolist(), predicted["label"].tolist(), bundle.meta.classes)
    return {"card": card, "explanations": explanations, "history": history, "holdout": holdout}


def binary_inputs(root: Path) -> dict[str, Any]:
    """Churn-like binary classification with a sensitive `age_band` (not a feature) and a
    feature column named like a script."""
    clean = with_age_band(churn_like(ROWS, strength=2.0)).rename(columns={"region": EVIL})
    the_spec = spec(trials=3, learners=["lightgbm"], timeBudgetSeconds=BUDGET)
    the_spec["fairness"] = {"sensitiveAttributes": ["age_band"]}
    the_spec["explain"] = {"immutableFeatures": ["tenure"], "topFeatures": 3}
    types = {(EVIL if k == "region" else k): v for k, v in TYPES.items()}
    return report_inputs(root, clean, the_spec, {**types, "age_band": "categorical"})


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    inputs = binary_inputs(tmp_path_factory.mktemp("report-binary"))
    return {**inputs, "page": render_report(**inputs)}


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    noise = np.random.default_rng(3).normal(0, 4, 400)
    clean = churn_like(400).assign(churned=lambda df: df["tenure"] * 2.0 + 5.0 + noise)
    the_spec = {
        **spec(trials=2, learners=["lightgbm"], timeBudgetSeconds=BUDGET),
        "task": "regression",
    }
    inputs = report_inputs(
        tmp_path_factory.mktemp("report-regression"),
        clean,
        the_spec,
        {**TYPES, "churned": "numeric"},
    )
    return {**inputs, "page": render_report(**inputs)}


def section(page: str, anchor: str) -> str:
    """The HTML of one section of the page."""
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert found, f"no section {anchor!r}"
    return found.group(1)


def test_a_binary_classification_page_has_every_section(binary: dict[str, Any]) -> None:
    page = binary["page"]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert re.findall(r'<section id="([^"]+)">', page) == list(BINARY_SECTIONS)
    summary = section(page, "summary")
    evaluation = binary["card"]["evaluation"]
    for fact in ("Model", "Task", "Primary metric", "Decision threshold", "Calibration method"):
        assert f"<dt>{fact}</dt>" in summary
    assert "baseline" in summary and evaluation["calibrationMethod"] in summary
    assert "<table>" in section(page, "leaderboard")
    history = section(page, "search-history")
    assert binary["history"].error is None and len(binary["history"].trials) == 3
    assert "<polyline" in history and history.count("<circle") >= 3
    # Bars: one per input column, SHAP and permutation importance alike.
    features = {item["feature"] for item in binary["explanations"]["shap"]["global"]}
    assert section(page, "shap").count("<rect") >= len(features)
    assert section(page, "permutation-importance").count("<rect") >= len(features)
    pdp = section(page, "partial-dependence")
    assert pdp.count('<svg class="plot"') == len(binary["explanations"]["partialDependence"])
    assert "<polyline" in pdp  # tenure (numeric): ICE lines and the PDP
    calibration = section(page, "calibration")
    assert (
        "ECE" in calibration and "Brier" in calibration and 'stroke-dasharray="6 4"' in calibration
    )
    fairness = section(page, "fairness")
    for column in ("count", "selection rate", "TPR", "FPR", "accuracy"):
        assert f"<th>{column}</th>" in fairness
    assert "demographic parity difference" in fairness and "equalized odds difference" in fairness
    confusion = section(page, "confusion-matrix")
    total = len(binary["holdout"].truth)
    assert f"{total} holdout rows" in confusion and "<th>yes</th>" in confusion
    counterfactuals = section(page, "counterfactuals")
    assert "&rarr;" in counterfactuals and "<code>tenure</code>" in counterfactuals  # immutable


def test_the_page_needs_nothing_from_anywhere(binary: dict[str, Any]) -> None:
    page = binary["page"]
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "@import" not in page and "url(" not in page
    for attribute, value in re.findall(r'\b(src|href|xlink:href)\s*=\s*"([^"]*)"', page):
        assert attribute == "href" and value.startswith("#"), (attribute, value)


def test_strings_from_the_data_are_escaped(binary: dict[str, Any]) -> None:
    page = binary["page"]
    assert EVIL not in page
    escaped = html.escape(EVIL)
    assert escaped in section(page, "shap") and escaped in section(page, "permutation-importance")
    # Everything a user names, everywhere the page shows it.
    card = {
        "model": EVIL,
        "task": "classification",
        "target": EVIL,
        "data": {"classes": [EVIL, "b"], "trainRows": 1, "holdoutRows": 2},
        "leaderboard": [
            {"rank": 1, "name": EVIL, "value": 0.5, "members": [EVIL], "weights": [1.0]}
        ],
        "evaluation": {
            "primaryMetric": EVIL,
            "metrics": {EVIL: 0.5},
            "baselineMetrics": {EVIL: 0.4},
            "fairness": {
                "figures": {f"{EVIL}.demographic_parity_difference": 0.3},
                "groups": {EVIL: [{"group": EVIL, "count": 1, EVIL: 0.5}]},
            },
        },
    }
    explanations = {
        "shap": {"global": [{"feature": EVIL, "meanAbs": 0.2}], "rows": 2},
        "permutationImportance": {"importance": [{"feature": EVIL, "drop": 0.1, "std": 0.0}]},
        "partialDependence": [
            {
                "feature": EVIL,
                "kind": "categorical",
                "grid": [EVIL, "x"],
                "pdp": [0.2, 0.4],
                "ice": [[0.1, 0.5]],
            },
            {"feature": EVIL, "kind": "numeric", "grid": [1, 2], "pdp": [0.2, 0.4], "ice": []},
        ],
        "examples": [
            {
                "row": 0,
                "explanation": {
                    "decision": EVIL,
                    "contributions": [{"feature": EVIL, "value": EVIL, "contribution": 0.1}],
                },
                "counterfactual": {
                    "decision": EVIL,
                    "flipsTo": "b",
                    "immutable": [EVIL],
                    "changes": [{"feature": EVIL, "from": EVIL, "to": "x"}],
                },
            }
        ],
    }
    made_up = render_report(card, explanations, History(error=EVIL), Holdout([EVIL], ["b"], [EVIL]))
    assert "<script" not in made_up and escaped in made_up


def test_regression_shows_residuals_and_no_calibration(regression: dict[str, Any]) -> None:
    page = regression["page"]
    anchors = re.findall(r'<section id="([^"]+)">', page)
    assert "residuals" in anchors
    assert not {"calibration", "confusion-matrix", "fairness"} & set(anchors)
    residuals = section(page, "residuals")
    rows = len(regression["holdout"].truth)
    assert residuals.count("<circle") >= rows and f"{rows} holdout rows" in residuals
    assert 'stroke-dasharray="6 4"' in residuals  # the predicted = actual diagonal
    summary = section(page, "summary")
    assert "no sensitive attributes were named" in summary
    assert "calibration applies to classification" in summary
    assert "<polyline" in section(page, "partial-dependence")


def test_a_parity_figure_above_the_limit_is_highlighted(binary: dict[str, Any]) -> None:
    fairness = section(binary["page"], "fairness")
    figures = binary["card"]["evaluation"]["fairness"]["figures"]
    over = [name for name, value in figures.items() if value > FAIRNESS_LIMIT]
    assert over, figures  # the age band rides on monthly contracts: a disparity is there
    assert fairness.count('class="num over"') == len(over)
    card = {
        "task": "classification",
        "evaluation": {
            "fairness": {
                "figures": {
                    "sex.demographic_parity_difference": 0.25,
                    "sex.equalized_odds_difference": 0.05,
                },
                "groups": {
                    "sex": [
                        {"group": "f", "count": 10, "selection_rate": 0.5},
                        {"group": "m", "count": 12, "selection_rate": 0.25},
                    ]
                },
            }
        },
    }
    made_up = section(render_report(card), "fairness")
    assert made_up.count('class="num over"') == 1
    assert re.search(r'class="num over">0\.2500 \(above 0\.1\)', made_up)
    assert '<td class="num">0.0500</td>' in made_up


def test_every_section_says_what_is_missing_instead_of_failing(tmp_path: Path) -> None:
    page = render_report({"task": "classification"})
    for anchor in BINARY_SECTIONS:
        if anchor != "fairness":
            assert section(page, anchor)
    assert "not audited: no sensitive attributes were named" in page
    assert "trial history was not provided" in section(page, "search-history")
    assert "holdout predictions were not provided" in section(page, "confusion-matrix")
    assert "<svg" not in page
    assert render_report({}).startswith("<!DOCTYPE html>")  # no task at all still renders
    broken = tmp_path / "study.journal"
    broken.write_text("not a journal\n")
    for source in (broken, tmp_path / "absent.journal"):
        history = load_history(source)
        assert history.error and not history.trials
        unreadable = section(
            render_report({"task": "classification"}, history=history), "search-history"
        )
        assert "could not be read" in unreadable
    assert broken.read_text() == "not a journal\n"  # read from a copy: nothing written


def test_the_confusion_matrix_counts_each_actual_class_by_decision() -> None:
    holdout = Holdout(["a", "a", "a", "b", "b"], ["a", "b", "a", "b", "c"], ["a", "b"])
    confusion = section(
        render_report({"task": "classification"}, holdout=holdout), "confusion-matrix"
    )
    cells = re.findall(r'<td class="num cm"[^>]*>(\d+)<br>', confusion)
    # Rows a, b, c (an unexpected prediction gets its own row and column).
    assert cells == ["2", "1", "0", "0", "1", "1", "0", "0", "0"]
    assert "5 holdout rows, 3 decided correctly (60.0%)" in confusion


def test_the_best_so_far_line_follows_the_studys_direction() -> None:
    trials = [
        (0, 3.0, "COMPLETE"),
        (1, 1.0, "COMPLETE"),
        (2, 2.0, "COMPLETE"),
        (3, 0.5, "PRUNED"),
        (4, None, "FAIL"),
    ]
    card = {"task": "regression", "training": {"objective": "minimize_rmse"}}
    history = section(render_report(card, history=trials), "search-history")
    line = re.search(r'<polyline points="([^"]+)"', history)
    assert line
    ys = [float(p.split(",")[1]) for p in line.group(1).split()]
    # A step line: 3.0, then 1.0 from trial 1 on, held through trial 2 (the pruned 0.5 and
    # the failed trial do not count); in pixels, lower values sit lower down.
    assert len(ys) == 4 and ys[0] == ys[1] < ys[2] == ys[3]
    assert "3 complete" in history and "1 pruned" in history and "1 fail" in history
