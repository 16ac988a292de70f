"""The search step: holdout split, cross-validated Optuna study, ensemble selection.

Inputs: `clean` (parquet). Outputs: `search/` holding study.journal (unless params.studyStorage
names another storage), split.json, leaderboard.json and oof/trial-<n>.npy (out-of-fold
predictions of the top trials).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from aiml024.api import ExperimentSpec
from aiml024.api.experiment import Trial
from aiml024.api.steps import LeaderboardRow, SearchResult

from .. import available_cpus, emit_event
from ..search import (
    DataError,
    Searcher,
    SearchOutcome,
    TrainingData,
    create_study,
    enqueue_defaults,
    make_split,
    open_storage,
    split_document,
    training_data,
)
from . import StepError, spec_from

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SPLIT_FILE = "split.json"
LEADERBOARD_FILE = "leaderboard.json"


def run(params: dict[str, Any], inputs: Path, outputs: Path) -> dict[str, Any]:
    started = time.monotonic()
    spec = spec_from(params)
    out = outputs / "search"
    out.mkdir(parents=True, exist_ok=True)
    clean, data = load_training(params, spec, inputs)
    try:
        split = make_split(data, spec)
    except DataError as error:
        raise StepError(str(error)) from None
    id_values = clean[spec.id_column] if spec.id_column in clean.columns else None
    write_json(out / SPLIT_FILE, split_document(split, data, id_values))

    name = params.get("workflow") or params.get("experiment") or "aiml024"
    storage = open_storage(params.get("studyStorage") or None, out / "study.journal")
    study = create_study(spec, storage, name, spec.split.folds)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if spec.search.warm_start and not study.get_trials(deepcopy=False):
        enqueue_defaults(study, spec.search.learners, limit=spec.search.trials)
    threads = max(1, available_cpus() // spec.search.parallelism)
    searcher = Searcher(data, split, spec, n_jobs=threads, on_trial=emit_event)
    deadline = started + spec.search.time_budget_seconds
    outcome = searcher.run(study, spec.search.trials - finished, deadline)
    if not outcome.records:
        raise StepError(
            f"no trial finished within timeBudgetSeconds={spec.search.time_budget_seconds} "
            f"({outcome.failed} failed, {outcome.pruned} pruned); raise the budget"
        )

    rows = leaderboard(outcome, spec.search.ensemble.size)
    write_json(
        out / LEADERBOARD_FILE,
        {
            "metric": spec.effective_objective,
            "classes": data.classes,
            "rows": [row.wire() for row in rows],
        },
    )
    (out / "oof").mkdir(exist_ok=True)
    for row in rows:
        if row.trial is not None:
            record = next(r for r in outcome.records if r.number == row.trial)
            np.save(out / "oof" / f"trial-{row.trial}.npy", record.oof)
    best = outcome.records[0]
    return SearchResult(
        trials_completed=outcome.completed,
        trials_pruned=outcome.pruned,
        trials_total=spec.search.trials,
        metric=spec.effective_objective,
        best_value=best.value,
        best_trial=Trial(
            number=best.number, learner=best.learner, value=best.value, params=best.params
        ),
        leaderboard=rows,
        elapsed_seconds=round(time.monotonic() - started, 3),
        train_rows=len(split.train),
        holdout_rows=len(split.holdout),
    ).wire()


def leaderboard(outcome: SearchOutcome, size: int) -> list[LeaderboardRow]:
    """The top trials (and the ensemble, when it has two or more members), ranked."""
    top = outcome.records[: max(size, 1)]
    by_number = {r.number: r for r in outcome.records}
    candidates: list[dict[str, Any]] = [
        {
            "name": r.learner,
            "learner": r.learner,
            "value": r.value,
            "trial": r.number,
            "params": r.params,
            "best_iteration": r.best_iteration,
        }
        for r in top
    ]
    if outcome.ensemble:
        candidates.append(
            {
                "name": "ensemble",
                "learner": "ensemble",
                "value": outcome.ensemble["value"],
                "members": [f"{by_number[n].learner}#{n}" for n in outcome.ensemble["trials"]],
                "weights": outcome.ensemble["weights"],
            }
        )
        for n in outcome.ensemble["trials"]:
            if all(c.get("trial") != n for c in candidates):
                r = by_number[n]
                candidates.append(
                    {
                        "name": r.learner,
                        "learner": r.learner,
                        "value": r.value,
                        "trial": n,
                        "params": r.params,
                        "best_iteration": r.best_iteration,
                    }
                )
    sign = -1.0 if outcome.direction == "maximize" else 1.0
    # Ties go to the ensemble's members' simpler form: the single trial ranks first.
    candidates.sort(key=lambda c: (sign * c["value"], c["name"] == "ensemble", c.get("trial", 0)))
    return [LeaderboardRow(rank=i + 1, **c) for i, c in enumerate(candidates)]


def load_training(
    params: dict[str, Any], spec: ExperimentSpec, inputs: Path
) -> tuple[pd.DataFrame, TrainingData]:
    """The clean table and its labelled rows, typed by the validate step's result."""
    clean = read_parquet(inputs / "clean")
    validate = params.get("validate") or {}
    declared = [
        c["value"] if isinstance(c, dict) else c for c in validate.get("targetClasses") or []
    ]
    try:
        data = training_data(clean, spec, validate.get("types"), declared)
    except DataError as error:
        raise StepError(str(error)) from None
    return clean, data


def read_parquet(path: Path) -> pd.DataFrame:
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise StepError(f"input artifact {path} holds no parquet file")
        path = files[0]
    if not path.exists():
        raise StepError(f"input artifact {path} is missing")
    return pd.read_parquet(path)


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
