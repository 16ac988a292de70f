"""The cross-validated search: runs the Optuna study's trials on the search rows and ranks
them, with the ensemble of the best.

Inside the study each fold's Featurizer is fit on that fold's training rows only; the fold
matrices are built once and shared by every trial (they do not depend on the trial's params).
A trial stops at the budget's search deadline (budget: the refit evaluate still needs is
reserved) and is pruned, never ranked, when the clock cuts it short.

Several workers may share one study (study: storage, sampler, the workers' shares): each
records `worker` on its trials and hands each finished trial's out-of-fold predictions to an
`oof_sink` (the search step persists them to the shared search directory).
`records_from_study` rebuilds the ranked records from the study and those files, so the
leaderboard and ensemble come from every worker's trials.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from aiml024.api import ExperimentSpec

from .budget import EVALUATE_OVERHEAD_SECONDS, explain_seconds, refit_seconds
from .ensemble import caruana
from .learners import DeadlineExceeded, get_learner, infer, train
from .metrics import parse_objective, score
from .splits import Split
from .study import trial_params
from .training import TrainingData, make_featurizer

log = logging.getLogger(__name__)

__all__ = [
    "Fold",
    "SearchOutcome",
    "Searcher",
    "TrialRecord",
    "is_imbalanced",
    "records_from_study",
    "top_k",
    "wants_log_target",
]


@dataclass
class Fold:
    val: np.ndarray  # positions within the search rows
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


@dataclass
class TrialRecord:
    number: int
    learner: str
    params: dict[str, Any]
    value: float
    oof: np.ndarray
    best_iteration: int | None
    fit_seconds: float | None = None  # mean seconds of one fold's fit


@dataclass
class SearchOutcome:
    records: list[TrialRecord]  # completed trials, best first
    completed: int
    pruned: int
    failed: int
    metric: str
    direction: str
    ensemble: dict[str, Any] | None = None  # {"trials", "weights", "value"}
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    folds: list[np.ndarray] = field(default_factory=list)


# A classification target whose rarest class holds less than this share of the rows searches
# balanced class weights too; a regression target this skewed (and >= 0) searches log1p.
IMBALANCE_SHARE = 0.2
LOG_TARGET_SKEW = 1.0


def is_imbalanced(y: np.ndarray, n_classes: int) -> bool:
    if not n_classes or not len(y):
        return False
    counts = np.bincount(y, minlength=n_classes)
    return bool(counts.min() / counts.sum() < IMBALANCE_SHARE)


def wants_log_target(y: np.ndarray) -> bool:
    if not len(y) or np.nanmin(y) < 0:
        return False
    return bool(pd.Series(y).skew() > LOG_TARGET_SKEW)


class Searcher:
    """Runs the cross-validated study on the search rows of a TrainingData."""

    def __init__(
        self,
        data: TrainingData,
        split: Split,
        spec: ExperimentSpec,
        n_jobs: int = 1,
        on_trial: Callable[[dict[str, Any]], None] | None = None,
        worker: int | None = None,
        oof_sink: Callable[[int, np.ndarray], None] | None = None,
    ):
        self.spec = spec
        self.task = data.task
        self.n_classes = data.n_classes
        self.metric, self.direction = parse_objective(spec.effective_objective)
        self.seed = spec.search.seed
        self.n_jobs = n_jobs
        self.on_trial = on_trial
        self.y = data.y[split.train]
        self.folds = split.folds()
        self.records: dict[int, TrialRecord] = {}
        self._data, self._split = data, split
        self._cache: list[Fold] = []
        self.deadline = math.inf  # the end of the whole budget (search and refit)
        self.worker = worker
        self.oof_sink = oof_sink
        self.imbalanced = self.task != "regression" and is_imbalanced(self.y, self.n_classes)
        self.log_target = self.task == "regression" and wants_log_target(self.y)

    def featurize_folds(self) -> None:
        X = self._data.X.iloc[self._split.train].reset_index(drop=True)
        for val in self.folds:
            train = np.setdiff1d(np.arange(len(self.y)), val)
            featurizer = make_featurizer(self.spec, self._data.types)
            X_train = featurizer.fit_transform(X.iloc[train])
            X_val = featurizer.transform(X.iloc[val])
            self._cache.append(Fold(val, X_train, self.y[train], X_val, self.y[val]))

    def reserve_seconds(self) -> float:
        """Seconds the search leaves before the budget's end: evaluate's fixed work, its
        explanations' share, and the
        refit of the trials it would most likely fit (the ensemble's candidates, else the
        best), estimated from their measured fold fits."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        records = sorted(list(self.records.values()), key=lambda r: (sign * r.value, r.number))
        keep = top_k(self.spec) if self.spec.search.ensemble.enabled else 1
        fixed = EVALUATE_OVERHEAD_SECONDS + explain_seconds(self.spec.search.time_budget_seconds)
        return fixed + sum(refit_seconds(r.fit_seconds) for r in records[:keep])

    def search_deadline(self) -> float:
        """When trials must stop: the budget's end less the reserve for evaluate."""
        return self.deadline - self.reserve_seconds()

    def run(
        self, study: optuna.Study, n_trials: int, deadline: float, threads: int | None = None
    ) -> SearchOutcome:
        """Run up to n_trials in this process (`threads` Optuna threads; default: the spec's
        parallelism, for a single search process). `deadline` ends the whole budget: trials
        stop at `search_deadline()`, which leaves evaluate its refit."""
        self.deadline = deadline
        if not self._cache:
            self.featurize_folds()
        remaining = deadline - time.monotonic()
        if n_trials > 0 and remaining > 0:
            study.optimize(
                self.objective,
                n_trials=n_trials,
                timeout=remaining,
                n_jobs=threads or self.spec.search.parallelism,
                catch=(Exception,),
                callbacks=[self._report],
            )
        return self.outcome(study)

    def objective(self, trial: optuna.Trial) -> float:
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker)
        learner = get_learner(trial.suggest_categorical("learner", self.spec.search.learners))
        params = learner.search_space(
            trial, learner.extra_space(self.task, self.imbalanced, self.log_target)
        )
        # Until one trial has completed, trials run to the end whatever the clock says (the
        # first is the first warm-start configuration): evaluate always gets a sound model.
        # Any later trial that the deadline cuts short (boosting stopped by the clock, not by
        # early stopping, or folds left unrun) is pruned, never ranked.
        first = not self.records
        oof = np.full((len(self.y), self.n_classes) if self.n_classes else len(self.y), np.nan)
        values, rounds, fits, started = [], [], [], time.monotonic()
        for k, fold in enumerate(self._cache):
            now = time.monotonic()
            fold_deadline = None if first else self.search_deadline()
            if fold_deadline is not None:
                spent_per_fold = (now - started) / k if k else 0.0
                if now + spent_per_fold > fold_deadline:
                    raise optuna.TrialPruned("out of time")
            try:
                fitted, kept = train(
                    learner,
                    params,
                    self.seed,
                    self.task,
                    fold.X_train,
                    fold.y_train,
                    fold.X_val,
                    fold.y_val,
                    n_classes=self.n_classes,
                    n_jobs=self.n_jobs,
                    patience=self.spec.search.early_stopping.patience_rounds,
                    deadline=fold_deadline,
                )
            except DeadlineExceeded as stopped:
                raise optuna.TrialPruned(str(stopped)) from None
            fits.append(time.monotonic() - now)
            if fold_deadline is not None and time.monotonic() > fold_deadline:
                raise optuna.TrialPruned("out of time")
            pred = infer(learner, fitted, fold.X_val)
            oof[fold.val] = pred
            values.append(score(self.metric, fold.y_val, pred, self.n_classes))
            if kept is not None:
                rounds.append(kept)
            trial.report(float(np.mean(values)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        value = float(np.mean(values))
        best_iteration = int(round(np.mean(rounds))) if rounds else None
        fit_seconds = float(np.mean(fits))
        trial.set_user_attr("best_iteration", best_iteration)
        trial.set_user_attr("fitSeconds", round(fit_seconds, 4))
        if self.oof_sink is not None:  # before the trial completes: no COMPLETE trial lacks it
            self.oof_sink(trial.number, oof)
        self.records[trial.number] = TrialRecord(
            trial.number, learner.name, params, value, oof, best_iteration, fit_seconds
        )
        return value

    def _report(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.records and time.monotonic() >= self.search_deadline():
            study.stop()  # no new trial: it would only be pruned
        if self.on_trial is None:
            return
        try:
            best = study.best_value
        except ValueError:
            best = None
        self.on_trial(
            {
                "event": "trial",
                "number": trial.number,
                "total": self.spec.search.trials,
                "value": trial.value,
                "best": best,
                "learner": trial.params.get("learner"),
                "state": trial.state.name.lower(),
            }
        )

    def outcome(
        self, study: optuna.Study, records: Sequence[TrialRecord] | None = None
    ) -> SearchOutcome:
        """Rank `records` (default: this process's trials) and select the ensemble."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        records = sorted(
            self.records.values() if records is None else records,
            key=lambda r: (sign * r.value, r.number),
        )
        states = [t.state for t in study.get_trials(deepcopy=False)]
        outcome = SearchOutcome(
            records=records,
            completed=len(records),
            pruned=states.count(optuna.trial.TrialState.PRUNED),
            failed=states.count(optuna.trial.TrialState.FAIL),
            metric=self.metric,
            direction=self.direction,
            y=self.y,
            folds=self.folds,
        )
        ensemble = self.spec.search.ensemble
        with_oof = [r for r in records if r.oof.size]
        if ensemble.enabled and len(with_oof) >= 2:
            top = with_oof[: max(ensemble.size, 2)]
            weights, value = caruana(
                [r.oof for r in top],
                self.y,
                self.folds,
                self.metric,
                self.n_classes,
                rounds=2 * len(top),
            )
            chosen = np.flatnonzero(weights)
            if len(chosen) >= 2:
                outcome.ensemble = {
                    "trials": [top[i].number for i in chosen],
                    "weights": [float(weights[i]) for i in chosen],
                    "value": value,
                }
        return outcome


def top_k(spec: ExperimentSpec) -> int:
    """How many of the best trials the leaderboard and the ensemble need (with their OOF)."""
    return max(spec.search.ensemble.size, 2)


def records_from_study(
    study: optuna.Study,
    direction: str,
    load_oof: Callable[[int], np.ndarray | None],
    keep: int,
) -> list[TrialRecord]:
    """Every worker's completed trials, best first; the best `keep` with their out-of-fold
    predictions (a trial whose predictions cannot be read is left out, with a warning)."""
    sign = -1.0 if direction == "maximize" else 1.0
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and "learner" in t.params
    ]
    complete.sort(key=lambda t: (sign * float(t.value or 0.0), t.number))
    records = []
    for trial in complete:
        oof = np.zeros(0)
        if len([r for r in records if r.oof.size]) < keep:
            loaded = load_oof(trial.number)
            if loaded is None:
                log.warning("trial %d: out-of-fold predictions are missing", trial.number)
                continue
            oof = loaded
        learner, params = trial_params(trial)
        rounds = trial.user_attrs.get("best_iteration")
        fit = trial.user_attrs.get("fitSeconds")
        records.append(
            TrialRecord(trial.number, learner, params, float(trial.value or 0.0), oof, rounds, fit)
        )
    return records
