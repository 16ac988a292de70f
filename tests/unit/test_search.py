"""The search step keeps its budget and trial count, is reproducible, and never sees the
holdout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aiml024.api.data_steps import IngestResult, ValidateResult
from aiml024.api.step_params import StepName, earlier_steps
from aiml024.runtime.ensemble import caruana
from aiml024.runtime.receipts import write_receipt
from aiml024.runtime.steps import StepError, params_for, run_root_from
from aiml024.runtime.steps import search as search_step

TYPES = {
    "customer_id": "id",
    "tenure": "numeric",
    "charges": "numeric",
    "contract": "categorical",
    "region": "categorical",
    "last_active": "datetime",
    "message": "text",
    "senior": "boolean",
    "churned": "categorical",
}
MESSAGES = ["cancel my plan", "great service thanks", "price is too high", "thanks", ""]


def churn_like(n: int = 800, seed: int = 0, strength: float = 1.0) -> pd.DataFrame:
    """A small churn table with numeric, categorical, datetime, text and boolean signal."""
    rng = np.random.default_rng(seed)
    snapshot = pd.Timestamp("2025-06-30")
    tenure = rng.integers(1, 72, n)
    charges = rng.normal(70, 20, n)
    contract = rng.choice(["monthly", "annual", "two-year"], n, p=[0.5, 0.3, 0.2])
    last = snapshot - pd.to_timedelta(rng.integers(0, 120, n), unit="D")
    message = rng.choice(MESSAGES, n)
    logit = strength * (
        -0.5
        - 0.05 * (tenure - 36)
        + 0.03 * (charges - 70)
        + 1.5 * (contract == "monthly")
        + 0.03 * ((snapshot - last).days - 60)
        + 2.0 * (message == "cancel my plan")
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(n)],
            "tenure": tenure,
            "charges": charges,
            "contract": contract,
            "region": rng.choice([f"r{i}" for i in range(12)], n),
            "last_active": last,
            "message": message,
            "senior": rng.random(n) < 0.2,
            "churned": np.where(churned, "yes", "no"),
        }
    )
    df.loc[rng.random(n) < 0.05, "charges"] = np.nan
    return df


def spec(**search: Any) -> dict[str, Any]:
    return {
        "task": "classification",
        "data": {"uri": "churn.csv"},
        "target": "churned",
        "idColumn": "customer_id",
        "split": {"folds": 3},
        "search": {"trials": 3, "timeBudgetSeconds": 60, **search},
    }


def ingest_result(rows: int, types: dict[str, str] = TYPES, **fields: Any) -> dict[str, Any]:
    """What the ingest step wrote for a table of `rows` rows with these column types."""
    return IngestResult.model_validate(
        {
            "uri": "churn.csv",
            "rows": rows,
            "columns": list(types),
            "types": types,
            "fingerprint": "f" * 64,
            **fields,
        }  # fmt: skip
    ).wire()


def validate_result(rows: int, types: dict[str, str] = TYPES, **fields: Any) -> dict[str, Any]:
    """What the validate step wrote: the clean table's rows and types (no PII by default)."""
    return ValidateResult.model_validate(
        {"rows": rows, "droppedRows": 0, "types": types, **fields}
    ).wire()


def step_params(
    the_spec: dict[str, Any], rows: int = 800, types: dict[str, str] = TYPES, **params: Any
) -> dict[str, Any]:
    """A step's whole --params document as the compiled Workflow passes it (api.step_params):
    the run's identity, its stores, the spec, and the ingest and validate results."""
    return {
        "experiment": "churn",
        "workflow": "churn-g1",
        "namespace": "default",
        "experimentUid": "uid-churn",
        "artifactStore": "",
        "studyStorage": "",
        "codeVersion": "0.1.0",
        "spec": the_spec,
        "ingest": ingest_result(rows, types),
        "validate": validate_result(rows, types),
        **params,
    }


def record_earlier(step: StepName, params: dict[str, Any], inputs: Path) -> None:
    """The receipts the earlier steps would have left had they run in this run (their results
    as `params` carries them, their artifacts as `inputs` holds them): what the dispatcher
    (`python -m aiml024.runtime`) checks before it runs `step` (aiml024.runtime.receipts)."""
    root = run_root_from(params_for(step, params))
    for earlier in earlier_steps(step):
        write_receipt(root, earlier, earlier, params[earlier], inputs)


def run_search(tmp: Path, clean: pd.DataFrame, the_spec: dict, **params: Any) -> dict:
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    clean.to_parquet(tmp / "in" / "clean")
    document = step_params(the_spec, rows=len(clean), **params)
    return search_step.run(document, tmp / "in", tmp / "out")


def test_search_keeps_its_time_budget(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_search(tmp_path, churn_like(3000), spec(trials=10_000, timeBudgetSeconds=3))
    elapsed = time.monotonic() - started
    assert elapsed <= 3 * 1.1 + 3
    assert result["trialsCompleted"] >= 1
    assert result["trialsCompleted"] + result["trialsPruned"] < 10_000


def test_search_runs_the_requested_trials_and_reports_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_search(tmp_path, churn_like(), spec(trials=3))
    assert result["trialsCompleted"] + result["trialsPruned"] == 3
    assert result["trialsTotal"] == 3 and result["metric"] == "maximize_auc"
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["number"] for e in events] == [0, 1, 2]
    assert all(e["event"] == "trial" and e["total"] == 3 for e in events)
    best = result["bestTrial"]
    assert best["value"] == result["bestValue"] == max(e["value"] for e in events if e["value"])
    # Warm start: the known-good configurations run first.
    assert [e["learner"] for e in events[:2]] == ["lightgbm", "xgboost"]


def test_same_seed_gives_the_same_leaderboard(tmp_path: Path) -> None:
    first = run_search(tmp_path / "a", churn_like(), spec(trials=4))
    second = run_search(tmp_path / "b", churn_like(), spec(trials=4))
    assert first["leaderboard"] == second["leaderboard"]


def test_the_holdout_never_reaches_the_search(tmp_path: Path) -> None:
    clean = churn_like()
    run_search(tmp_path / "a", clean, spec(trials=3))
    split = json.loads((tmp_path / "a" / "out" / "search" / "split.json").read_text())
    holdout, train = set(split["holdout"]), set(split["train"])
    assert not holdout & train and holdout | train == set(range(len(clean)))
    assert len(holdout) == pytest.approx(0.2 * len(clean), abs=1)
    assert split["holdoutIds"] == clean["customer_id"].iloc[split["holdout"]].tolist()
    # Scrambling every feature of the holdout rows changes nothing the search reports.
    poisoned = clean.copy()
    rows = sorted(holdout)
    for column in ("tenure", "charges"):
        poisoned.loc[rows, column] = -1e6
    poisoned.loc[rows, "message"] = "cancel my plan"
    first = json.loads((tmp_path / "a" / "out" / "search" / "leaderboard.json").read_text())
    run_search(tmp_path / "b", poisoned, spec(trials=3))
    second = json.loads((tmp_path / "b" / "out" / "search" / "leaderboard.json").read_text())
    for board in (first, second):  # timings differ from run to run
        board.pop("budget")
    assert first == second


def test_leaderboard_ranks_trials_and_the_ensemble(tmp_path: Path) -> None:
    result = run_search(tmp_path, churn_like(), spec(trials=6))
    board = result["leaderboard"]
    assert [row["rank"] for row in board] == list(range(1, len(board) + 1))
    values = [row["value"] for row in board]
    assert values == sorted(values, reverse=True)
    out = tmp_path / "out" / "search"
    for row in board:
        if row["name"] == "ensemble":
            assert len(row["members"]) >= 2
            assert sum(row["weights"]) == pytest.approx(1.0)
        else:
            assert row["params"] and (out / "oof" / f"trial-{row['trial']}.npy").exists()
    assert (out / "study.journal").exists()


def test_study_storage_url_and_study_name(tmp_path: Path) -> None:
    journal = tmp_path / "shared" / "studies.journal"
    run_search(tmp_path, churn_like(), spec(trials=2), studyStorage=f"journal://{journal}")
    import optuna

    from aiml024.runtime.study import open_storage

    study = optuna.load_study(
        study_name="default.churn.uid-churn.churn-g1",
        storage=open_storage(f"journal://{journal}", tmp_path / "unused"),
    )
    assert len(study.trials) == 2


def test_regression_minimizes_rmse(tmp_path: Path) -> None:
    clean = churn_like().assign(churned=lambda df: df["tenure"] * 2.0 + df["charges"].fillna(0))
    the_spec = {**spec(trials=2), "task": "regression"}
    result = run_search(tmp_path, clean, the_spec)
    assert result["metric"] == "minimize_rmse" and result["bestValue"] > 0


def test_a_class_too_small_for_the_folds_is_a_step_error(tmp_path: Path) -> None:
    clean = churn_like(200)
    clean.loc[:, "churned"] = "no"
    clean.loc[:2, "churned"] = "yes"
    with pytest.raises(StepError, match="class 'yes' has only 3 rows"):
        run_search(tmp_path, clean, spec())


def test_caruana_blends_complementary_models() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    folds = np.array_split(np.arange(2000), 4)

    def noisy() -> np.ndarray:
        p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(scale=0.4, size=2000), 0.01, 0.99)
        return np.column_stack([1 - p, p])

    a, b = noisy(), noisy()
    weights, value = caruana([a, b], y, folds, "auc", 2, rounds=10)
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()
    from aiml024.runtime.metrics import fold_score

    assert value > max(fold_score("auc", y, p, folds, 2) for p in (a, b))


def test_a_trial_cut_short_by_the_deadline_is_pruned_never_ranked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiml024.runtime import search as search_module
    from aiml024.runtime.learners import DeadlineExceeded

    real = search_module.train

    def train(*args: Any, deadline: float | None = None, **kwargs: Any) -> Any:
        if deadline is not None:  # the first trial runs without one: it always finishes
            raise DeadlineExceeded("stopped by the deadline after 11 rounds")
        return real(*args, deadline=deadline, **kwargs)

    monkeypatch.setattr(search_module, "train", train)
    result = run_search(tmp_path, churn_like(), spec(trials=3))
    assert result["trialsCompleted"] == 1 and result["trialsPruned"] == 2
    assert [row["trial"] for row in result["leaderboard"]] == [0]


def test_the_search_leaves_evaluate_its_refit_time(tmp_path: Path) -> None:
    from aiml024.runtime.budget import EVALUATE_OVERHEAD_SECONDS

    result = run_search(tmp_path, churn_like(3000), spec(trials=10_000, timeBudgetSeconds=8))
    board = json.loads((tmp_path / "out" / "search" / "leaderboard.json").read_text())
    budget = board["budget"]
    refits = budget["refitSeconds"]
    assert set(refits) == {str(r["trial"]) for r in board["rows"] if r.get("trial") is not None}
    assert all(seconds > 0 for seconds in refits.values())
    # Stopped at the budget less evaluate's fixed work and (some of) the refits, give or take
    # the trial that was running.
    assert budget["remainingSeconds"] >= EVALUATE_OVERHEAD_SECONDS - 1.0
    assert result["elapsedSeconds"] <= 8 - EVALUATE_OVERHEAD_SECONDS + 1.5
