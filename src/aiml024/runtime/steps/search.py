"""The search step: holdout split, cross-validated Optuna study, ensemble selection.

Inputs: `clean` (parquet). Outputs: `search/` holding study.journal (unless params.studyStorage
names another storage), split.json, leaderboard.json and oof/trial-<n>.npy (out-of-fold
predictions of the top trials).

Params: api.step_params.SearchParams. Three roles, chosen by them:

- no `worker` and no `merge`: one process runs the whole study (the default; with
  spec.search.parallelism > 1 it runs that many Optuna threads);
- `"worker": i` (spec.search.parallelism = N workers): run this worker's share of the trial cap
  (`worker_quota`) on the shared study until the time budget; every finished trial's
  out-of-fold predictions go to the shared search directory (`shared_dir`). Writes a
  SearchWorkerResult (trials this worker finished), no artifact;
- `"merge": true`: after every worker, rebuild the leaderboard and the ensemble from all the
  workers' trials and write the usual `search/` artifact and SearchResult.

The shared search directory is `searchShared`, else `<run root>/search` (any fsspec location;
the run root is aiml024.api.steps.run_root, unique per namespace and Experiment uid). The study
is `studyStorage` (PostgreSQL in a cluster); when that is empty the workers share a journal
file (with a lock) in the shared directory, which must then be on a local filesystem.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from aiml024.api import ExperimentSpec
from aiml024.api.experiment import Trial
from aiml024.api.step_params import SearchParams
from aiml024.api.steps import (
    Leaderboard,
    LeaderboardRow,
    RefitBudget,
    SearchResult,
    SearchWorkerResult,
)

from .. import available_cpus, emit_event, portfolio, step_clock
from ..artifacts import (
    LEADERBOARD_FILE,
    OOF_DIR,
    SEARCH,
    SPLIT_FILE,
    STUDY_JOURNAL,
    oof_file,
    write_json,
)
from ..budget import refit_seconds
from ..search import Searcher, SearchOutcome, records_from_study, top_k
from ..splits import Split, make_split, split_document
from ..study import create_study, enqueue_warm_start, open_storage, worker_quota
from ..training import TrainingData, load_training
from . import StepError, parse_params, run_root_from, study_name

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def run(params: Mapping[str, Any] | SearchParams, inputs: Path, outputs: Path) -> dict[str, Any]:
    # The budget counts from the process start (the dispatcher's clock): imports included.
    started = step_clock()
    typed = parse_params(SearchParams, params)
    if typed.worker is not None:
        return run_worker(typed, typed.worker, inputs, started)
    return run_search(typed, inputs, outputs / SEARCH, started)


def run_search(params: SearchParams, inputs: Path, out: Path, started: float) -> dict[str, Any]:
    """The whole study in this process, or (`merge`) the merge of the workers' trials."""
    spec = params.spec
    out.mkdir(parents=True, exist_ok=True)
    clean, data = load_training(inputs, spec, params.validate_result)
    split = make_split(data, spec)
    id_values = clean[spec.id_column] if spec.id_column in clean.columns else None
    write_json(out / SPLIT_FILE, split_document(split, data, id_values))
    if params.merge:
        return run_merge(params, data, split, out, started)

    storage = open_storage(params.study_storage or None, out / STUDY_JOURNAL)
    study = create_study(spec, storage, study_name(params), spec.split.folds)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if spec.search.warm_start:
        kind = portfolio.task_kind(data.task, data.n_classes)
        enqueue_warm_start(study, kind, spec.search.learners, limit=spec.search.trials)
    threads = max(1, available_cpus() // spec.search.parallelism)
    searcher = Searcher(data, split, spec, n_jobs=threads, on_trial=emit_event)
    deadline = started + spec.search.time_budget_seconds
    outcome = searcher.run(study, spec.search.trials - finished, deadline)
    return finish(spec, data, split, outcome, out, started)


def shared_dir(params: SearchParams) -> str:
    """Where the workers put what the merge reads (an fsspec URI or a path)."""
    if params.search_shared:
        return params.search_shared
    return f"{run_root_from(params)}/{SEARCH}"


def _fs(uri: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    return fs, root.rstrip("/")


def shared_storage(params: SearchParams) -> Any:
    """The study every worker shares: params.studyStorage, else a locked journal file in the
    shared directory (a local filesystem only: a journal cannot be locked on object storage)."""
    if params.study_storage:
        return open_storage(params.study_storage, Path("unused"))
    fs, root = _fs(shared_dir(params))
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        raise StepError(
            f"spec.search.parallelism > 1 with the shared directory {shared_dir(params)} needs a "
            "study-storage URL (e.g. postgresql://...): a journal file cannot be shared there"
        )
    return open_storage(f"journal://{root}/{STUDY_JOURNAL}", Path("unused"))


def run_worker(params: SearchParams, worker: int, inputs: Path, started: float) -> dict[str, Any]:
    """One of N workers on the shared study; see the module docstring."""
    spec, workers = params.spec, params.spec.search.parallelism
    if not 0 <= worker < workers:
        raise StepError(f"worker {worker} is outside 0..{workers - 1} (spec.search.parallelism)")
    _, data = load_training(inputs, spec, params.validate_result)
    split = make_split(data, spec)
    storage = shared_storage(params)
    study = create_study(spec, storage, study_name(params), spec.split.folds, worker=worker)
    mine = [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.user_attrs.get("worker") == worker
    ]
    if spec.search.warm_start:
        kind = portfolio.task_kind(data.task, data.n_classes)
        enqueue_warm_start(
            study, kind, spec.search.learners, spec.search.trials, worker=worker, workers=workers
        )
    fs, root = _fs(shared_dir(params))
    fs.makedirs(f"{root}/{OOF_DIR}", exist_ok=True)

    def save_oof(number: int, oof: np.ndarray) -> None:
        with fs.open(f"{root}/{OOF_DIR}/{oof_file(number)}", "wb") as handle:
            np.save(handle, oof)

    threads = max(1, available_cpus() // workers)
    searcher = Searcher(
        data, split, spec, n_jobs=threads, on_trial=emit_event, worker=worker, oof_sink=save_oof
    )
    quota = worker_quota(spec.search.trials, workers, worker)
    deadline = started + spec.search.time_budget_seconds
    searcher.run(study, quota - len(mine), deadline, threads=1)
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.user_attrs.get("worker") == worker
    ]
    states = [t.state for t in done]
    return SearchWorkerResult(
        worker=worker,
        workers=workers,
        quota=quota,
        trials=sorted(t.number for t in done),
        trials_completed=states.count(TrialState.COMPLETE),
        trials_pruned=states.count(TrialState.PRUNED),
        trials_failed=states.count(TrialState.FAIL),
        elapsed_seconds=round(time.monotonic() - started, 3),
    ).wire()


def run_merge(
    params: SearchParams,
    data: TrainingData,
    split: Split,
    out: Path,
    started: float,
) -> dict[str, Any]:
    """Leaderboard and ensemble from every worker's trials; copies the journal (if any)."""
    import optuna

    spec = params.spec
    storage = shared_storage(params)
    try:
        study = optuna.load_study(study_name=study_name(params), storage=storage)
    except KeyError:
        raise StepError(f"no study {study_name(params)!r} to merge: did the workers run?") from None
    fs, root = _fs(shared_dir(params))

    def load_oof(number: int) -> np.ndarray | None:
        try:
            with fs.open(f"{root}/{OOF_DIR}/{oof_file(number)}", "rb") as handle:
                return np.asarray(np.load(handle))
        except FileNotFoundError:
            return None

    searcher = Searcher(data, split, spec)
    records = records_from_study(study, searcher.direction, load_oof, keep=top_k(spec))
    outcome = searcher.outcome(study, records)
    if not params.study_storage and fs.exists(f"{root}/{STUDY_JOURNAL}"):
        fs.get(f"{root}/study.journal", str(out / STUDY_JOURNAL))
    return finish(spec, data, split, outcome, out, started)


def finish(
    spec: ExperimentSpec,
    data: TrainingData,
    split: Split,
    outcome: SearchOutcome,
    out: Path,
    started: float,
) -> dict[str, Any]:
    """Write leaderboard.json and the top trials' OOF predictions; the SearchResult."""
    if not outcome.records:
        raise StepError(
            f"no trial finished within timeBudgetSeconds={spec.search.time_budget_seconds} "
            f"({outcome.failed} failed, {outcome.pruned} pruned); raise the budget"
        )

    rows = leaderboard(outcome, spec.search.ensemble.size)
    budget = spec.search.time_budget_seconds
    in_board = {row.trial for row in rows if row.trial is not None}
    board = Leaderboard(
        metric=spec.effective_objective,
        classes=data.classes,
        rows=rows,
        budget=RefitBudget(
            time_budget_seconds=budget,
            search_seconds=round(time.monotonic() - started, 3),
            remaining_seconds=round(max(0.0, started + budget - time.monotonic()), 3),
            refit_seconds={
                str(r.number): round(refit_seconds(r.fit_seconds), 3)
                for r in outcome.records
                if r.number in in_board and r.fit_seconds is not None
            },
        ),
    )
    write_json(out / LEADERBOARD_FILE, board.wire())
    (out / OOF_DIR).mkdir(exist_ok=True)
    for row in rows:
        if row.trial is not None:
            record = next(r for r in outcome.records if r.number == row.trial)
            np.save(out / OOF_DIR / oof_file(row.trial), record.oof)
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
