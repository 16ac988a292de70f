"""Evaluate refits the chosen model, beats a plain baseline on an easy task, and writes a
bundle that serves raw rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.unit.test_search import TYPES, churn_like, spec, step_params, validate_result

from aiml024.api.step_params import EvaluateParams
from aiml024.api.steps import Leaderboard, LeaderboardRow, RefitBudget, SearchResult
from aiml024.runtime.budget import fit_budget
from aiml024.runtime.bundle import bundle_digest, load_bundle
from aiml024.runtime.steps import StepError, parse_params
from aiml024.runtime.steps import evaluate as evaluate_step
from aiml024.runtime.steps import search as search_step

PII = {"email": "email"}


def with_email(df: pd.DataFrame) -> pd.DataFrame:
    domains = np.where(np.arange(len(df)) % 3, "gmail.com", "proton.me")
    return df.assign(email=[f"<email>@{d}" for d in domains])


@pytest.fixture(scope="module")
def evaluated(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    root = tmp_path_factory.mktemp("evaluate")
    clean = with_email(churn_like(1500, strength=2.5))
    (root / "in").mkdir()
    clean.to_parquet(root / "in" / "clean")
    types = {**TYPES, "email": "categorical"}
    the_spec = {**spec(trials=5), "model": {"name": "churn-model", "labels": {"team": "retention"}}}
    params = step_params(the_spec, rows=1500, types=types)
    params["validate"] = validate_result(
        1500,
        types,
        pii=PII,
        piiAction="mask",
        targetClasses=[{"value": "no", "count": 1}, {"value": "yes", "count": 1}],
    )
    params["search"] = search_step.run(params, root / "in", root / "in")
    result = evaluate_step.run(params, root / "in", root / "out")
    return root, result, clean


def test_result_reports_holdout_metrics_against_the_baseline(evaluated) -> None:
    root, result, _ = evaluated
    assert (
        set(result["metrics"])
        == set(result["baselineMetrics"])
        == {"auc", "f1", "accuracy", "logloss"}
    )
    assert result["primaryMetric"] == "auc"
    assert result["metrics"]["auc"] > 0.8
    assert set(result["calibration"]) == {"brier", "ece"}
    assert result["sha256"] == bundle_digest(root / "out" / "bundle")
    assert result["holdoutRows"] == 300 and result["threshold"] == 0.5
    assert result["learner"] in ("lightgbm", "xgboost", "ensemble") and result["members"]


def test_bundle_predicts_raw_rows_with_unseen_categories_and_missing_columns(evaluated) -> None:
    root, result, clean = evaluated
    bundle = load_bundle(root / "out" / "bundle")
    rows = [
        {
            "tenure": 2,
            "charges": 95.0,
            "contract": "monthly",
            "region": "atlantis",
            "last_active": "2025-03-01",
            "message": "cancel my plan",
            "senior": True,
            "email": "jane.doe@gmail.com",
        },
        {"contract": "lifetime"},
        {},
    ]
    predicted = bundle.predict(rows)
    assert list(predicted.columns) == ["label", "score"]
    assert set(predicted["label"]) <= {"no", "yes"}
    assert predicted["score"].between(0, 1).all()
    # The raw email is masked by the served pipeline, like the training data was.
    assert bundle.meta.positive_class == "yes" and bundle.meta.classes == ["no", "yes"]
    dtypes = {c.name: c.dtype for c in bundle.meta.columns}
    assert dtypes["email"] == "categorical" and dtypes["last_active"] == "datetime"
    assert "customer_id" not in dtypes and "churned" not in dtypes
    holdout = json.loads((root / "in" / "search" / "split.json").read_text())["holdout"]
    frame = clean.iloc[holdout].drop(columns=["churned"])
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(clean["churned"].iloc[holdout] == "yes", bundle.predict(frame)["score"])
    assert auc == pytest.approx(result["metrics"]["auc"])  # served exactly as evaluated


def test_model_card_is_complete_and_names_the_evidence(evaluated) -> None:
    root, result, _ = evaluated
    card = json.loads((root / "out" / "card" / "model_card.json").read_text())
    assert result["cardComplete"] is card["complete"] is True
    assert card["owner"] == "retention" and card["pii"] == {"columns": PII, "action": "mask"}
    assert card["data"]["fingerprint"] == "f" * 64
    assert card["evaluation"]["baselineMetrics"] == result["baselineMetrics"]
    markdown = (root / "out" / "card" / "model_card.md").read_text()
    for heading in (
        "Intended use",
        "Owner",
        "Data",
        "Training procedure",
        "Leaderboard",
        "Holdout evaluation",
        "Personal data",
        "Limitations",
    ):
        assert f"## {heading}" in markdown


def test_regression_evaluates_rmse_mae_r2(tmp_path: Path) -> None:
    clean = churn_like(600).assign(churned=lambda df: df["tenure"] * 2.0 + 5.0)
    (tmp_path / "in").mkdir()
    clean.to_parquet(tmp_path / "in" / "clean")
    the_spec = {**spec(trials=2), "task": "regression"}
    params = step_params(the_spec, rows=600, types={**TYPES, "churned": "numeric"})
    params["search"] = search_step.run(params, tmp_path / "in", tmp_path / "in")
    result = evaluate_step.run(params, tmp_path / "in", tmp_path / "out")
    assert set(result["metrics"]) == {"rmse", "mae", "r2"} and result["metrics"]["r2"] > 0.9
    assert result["cardComplete"] is False  # no owner label
    predicted = load_bundle(tmp_path / "out" / "bundle").predict([{"tenure": 10}])
    assert predicted["score"].iloc[0] == pytest.approx(25.0, abs=10)


def test_ensemble_members_that_would_overrun_the_budget_are_dropped() -> None:
    import time

    board = [
        LeaderboardRow(rank=1, name="ensemble", learner="ensemble", value=0.9,
                       members=["lightgbm#0", "xgboost#1", "xgboost#2"], weights=[0.5, 0.3, 0.2]),
        LeaderboardRow(rank=2, name="lightgbm", learner="lightgbm", value=0.88, trial=0),
        LeaderboardRow(rank=3, name="xgboost", learner="xgboost", value=0.87, trial=1),
        LeaderboardRow(rank=4, name="xgboost", learner="xgboost", value=0.86, trial=2),
    ]  # fmt: skip
    budget = RefitBudget(
        time_budget_seconds=60, search_seconds=54, remaining_seconds=6.0,
        refit_seconds={"0": 1.0, "1": 2.0, "2": 30.0},
    )  # fmt: skip
    dropped = fit_budget(board, budget, time.monotonic())
    assert dropped == ["xgboost#2"]
    assert board[0].members == ["lightgbm#0", "xgboost#1"]
    assert board[0].weights == pytest.approx([0.625, 0.375])
    # Time for one member only: the ensemble gives way to the single trials.
    less = budget.model_copy(update={"remaining_seconds": 1.0})
    dropped = fit_budget(board, less, time.monotonic())
    assert dropped == ["xgboost#1"] and all(row.name != "ensemble" for row in board)
    # Time enough, or no budget from the search: nothing changes.
    assert fit_budget(board, None, time.monotonic()) == []


def test_a_renamed_leaderboard_field_fails_evaluate_loudly(tmp_path: Path) -> None:
    """search/leaderboard.json is read as api.steps.Leaderboard: no default for a lost field."""
    from aiml024.runtime.artifacts import read_model

    board = Leaderboard(
        metric="maximize_auc",
        rows=[LeaderboardRow(rank=1, name="lightgbm", learner="lightgbm", value=0.8, trial=0)],
    ).wire()
    board["rows"][0]["bestIter"] = board["rows"][0].pop("value")
    (tmp_path / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(StepError) as failed:
        read_model(tmp_path / "leaderboard.json", Leaderboard, "search")
    assert "rows[0].value" in str(failed.value) and "bestIter" in str(failed.value)


def test_same_seed_data_and_spec_give_the_same_bundle_digest(tmp_path: Path) -> None:
    """Run sequentially with a trial cap well inside the budget, training is reproducible."""
    clean = churn_like(600, strength=2.5)
    digests = []
    for attempt in ("first", "second"):
        root = tmp_path / attempt
        (root / "in").mkdir(parents=True)
        clean.to_parquet(root / "in" / "clean")
        params = step_params(spec(trials=3, learners=["lightgbm"]), rows=600)
        params["search"] = search_step.run(params, root / "in", root / "in")
        digests.append(evaluate_step.run(params, root / "in", root / "out")["sha256"])
    assert digests[0] == digests[1]


def test_a_renamed_result_field_fails_the_consumer_loudly(tmp_path: Path) -> None:
    """The earlier results are read through the models they were written with: a field its
    producer renamed (validate's piiAction as piiHandling) or stopped writing (search's
    trialsPruned) stops evaluate before any work, naming the keys, instead of falling into a
    default (mask the PII, zero pruned trials)."""
    params = step_params(spec(trials=1), rows=600)
    params["search"] = SearchResult.model_validate(
        {"trialsCompleted": 1, "trialsPruned": 0, "trialsTotal": 1, "metric": "maximize_auc",
         "bestValue": 0.8, "bestTrial": {"number": 0, "learner": "lightgbm", "value": 0.8},
         "leaderboard": [], "elapsedSeconds": 1.0, "trainRows": 480, "holdoutRows": 120}
    ).wire()  # fmt: skip
    parse_params(EvaluateParams, params)  # whole, it parses
    params["validate"]["piiHandling"] = params["validate"].pop("piiAction")
    del params["search"]["trialsPruned"]
    with pytest.raises(StepError) as raised:
        evaluate_step.run(params, tmp_path / "in", tmp_path / "out")
    assert str(raised.value) == (
        "invalid params: 'validate.piiAction' is missing; 'search.trialsPruned' is missing; "
        "'validate.piiHandling' is not a known key (renamed?)"
    )
    assert not (tmp_path / "out").exists()
