"""Budget allocation (pruners), class imbalance, log targets, multiclass end to end, and
serving constraints on the chosen model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from tests.unit.test_search import churn_like, run_search, spec, step_params

from aiml024.api import ExperimentSpec
from aiml024.runtime.learners import get_learner, infer, train
from aiml024.runtime.search import is_imbalanced, wants_log_target
from aiml024.runtime.steps import evaluate as evaluate_step
from aiml024.runtime.study import make_pruner, worker_quota


def experiment_spec(**search: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec(**search))


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("successive-halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_each_early_stopping_pruner_is_wired(pruner: str, cls: type) -> None:
    assert isinstance(make_pruner(experiment_spec(earlyStopping={"pruner": pruner}), 5), cls)
    disabled = experiment_spec(earlyStopping={"pruner": pruner, "enabled": False})
    assert isinstance(make_pruner(disabled, 5), optuna.pruners.NopPruner)


@pytest.mark.parametrize("pruner", ["successive-halving", "hyperband"])
def test_a_search_under_asha_or_hyperband_accounts_for_every_trial(
    tmp_path: Path, pruner: str
) -> None:
    the_spec = spec(trials=6, learners=["linear", "lightgbm"], earlyStopping={"pruner": pruner})
    result = run_search(tmp_path, churn_like(400), the_spec)
    assert result["trialsCompleted"] + result["trialsPruned"] == 6
    assert result["trialsCompleted"] >= 1


def test_worker_quotas_add_up_to_the_trial_cap() -> None:
    for trials in (1, 5, 40, 41):
        for workers in (1, 2, 3, 7):
            shares = [worker_quota(trials, workers, w) for w in range(workers)]
            assert sum(shares) == trials and max(shares) - min(shares) <= 1


def test_class_weight_is_searched_only_for_strongly_imbalanced_classes() -> None:
    assert is_imbalanced(np.array([0] * 90 + [1] * 10), 2)
    assert not is_imbalanced(np.array([0] * 76 + [1] * 24), 2)  # the churn demo's balance
    lightgbm = get_learner("lightgbm")
    assert "class_weight" in lightgbm.extra_space("classification", imbalanced=True)
    assert lightgbm.extra_space("classification", imbalanced=False) == {}
    assert get_learner("knn").extra_space("classification", imbalanced=True) == {}


@pytest.mark.parametrize("name", ["lightgbm", "xgboost", "random_forest", "linear"])
def test_balanced_class_weight_raises_the_minority_scores(name: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    y = (X[:, 0] + rng.normal(scale=1.0, size=600) > 1.8).astype(int)  # about 5% positive
    learner = get_learner(name)
    params = dict(learner.defaults[0])
    plain, _ = train(learner, params, 0, "classification", X, y, n_classes=2, n_estimators=50)
    balanced, _ = train(
        learner, {**params, "class_weight": "balanced"}, 0, "classification", X, y,
        n_classes=2, n_estimators=50,
    )  # fmt: skip
    assert infer(learner, balanced, X)[:, 1].mean() > infer(learner, plain, X)[:, 1].mean()


def test_log_target_is_offered_for_a_skewed_positive_target_and_inverted() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 3))
    y = np.exp(1.5 * X[:, 0] + rng.normal(scale=0.2, size=800))
    assert wants_log_target(y) and not wants_log_target(X[:, 0]) and not wants_log_target(-y)
    learner = get_learner("linear")
    assert "target_transform" in learner.extra_space("regression", log_target=True)
    logged, _ = train(learner, {"C": 1.0, "target_transform": "log1p"}, 0, "regression", X, y)
    plain, _ = train(learner, {"C": 1.0, "target_transform": "none"}, 0, "regression", X, y)
    pred = infer(learner, logged, X)
    assert pred.min() > -1  # back on the original scale, through expm1
    rmse = {k: np.sqrt(np.mean((infer(learner, f, X) - y) ** 2)) for k, f in
            (("log", logged), ("plain", plain))}  # fmt: skip
    assert rmse["log"] < rmse["plain"]


def test_a_skewed_regression_target_searches_log1p(tmp_path: Path) -> None:
    clean = churn_like(400).assign(churned=lambda df: np.exp(df["tenure"] / 12.0))
    the_spec = {**spec(trials=4, learners=["lightgbm"]), "task": "regression"}
    run_search(tmp_path, clean, the_spec)
    board = json.loads((tmp_path / "out" / "search" / "leaderboard.json").read_text())
    assert all(row["params"]["target_transform"] in ("none", "log1p")
               for row in board["rows"] if row.get("trial") is not None)  # fmt: skip


def evaluate(tmp: Path, clean: pd.DataFrame, the_spec: dict[str, Any]) -> dict[str, Any]:
    params = step_params(the_spec, rows=len(clean), experiment="e", workflow="e-g1")
    params["search"] = run_search(tmp, clean, the_spec)
    clean.to_parquet(tmp / "out" / "clean")  # evaluate's inputs: clean and search
    return evaluate_step.run(params, tmp / "out", tmp / "eval")


def test_a_three_class_target_runs_through_search_and_evaluate(tmp_path: Path) -> None:
    clean = churn_like(600)
    clean["churned"] = np.select(
        [clean["contract"] == "monthly", clean["tenure"] > 40], ["soon", "never"], "later"
    )
    result = evaluate(tmp_path, clean, spec(trials=4, learners=["lightgbm", "linear"]))
    assert result["metrics"]["auc"] > 0.8 and result["metrics"]["accuracy"] > 0.6
    card = json.loads((tmp_path / "eval" / "card" / "model_card.json").read_text())
    assert card["data"]["classes"] == ["later", "never", "soon"]
    from aiml024.runtime.bundle import load_bundle

    labels = load_bundle(tmp_path / "eval" / "bundle").predict(clean.head(20))["label"]
    assert set(labels) <= {"later", "never", "soon"}


def test_serving_constraints_choose_the_best_model_that_meets_them(tmp_path: Path) -> None:
    the_spec = {
        **spec(trials=4, learners=["lightgbm", "linear"]),
        "constraints": {"latencyP95Ms": 10_000, "maxModelSizeMb": 0.05},
    }
    result = evaluate(tmp_path, churn_like(500), the_spec)
    card = json.loads((tmp_path / "eval" / "card" / "model_card.json").read_text())
    outcome = card["evaluation"]["constraints"]
    measured = [row for row in card["leaderboard"] if "sizeMb" in row]
    assert outcome["constrained"] and measured
    assert all(row["latencyP95Ms"] > 0 for row in measured)
    chosen = next(row for row in card["leaderboard"] if row["rank"] == outcome["rank"])
    if outcome["met"]:
        assert chosen["sizeMb"] <= 0.05
        # Every better-ranked candidate was measured and broke a constraint.
        assert all(row["sizeMb"] > 0.05 for row in measured if row["rank"] < chosen["rank"])
    assert result["members"] == (chosen.get("members") or [f"{chosen['name']}#{chosen['trial']}"])
    assert any("Serving constraints" in item or "serving constraints" in item
               for item in card["limitations"])  # fmt: skip


def test_without_constraints_the_chosen_model_still_reports_its_serving_cost(
    tmp_path: Path,
) -> None:
    evaluate(tmp_path, churn_like(400), spec(trials=2, learners=["linear"]))
    card = json.loads((tmp_path / "eval" / "card" / "model_card.json").read_text())
    assert card["evaluation"]["constraints"] == {"constrained": False}
    assert sum("latencyP95Ms" in row for row in card["leaderboard"]) == 1
