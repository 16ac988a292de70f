"""Hyperparameter search: holdout split, cross-validated Optuna study, Caruana ensembling.

The holdout rows are chosen first and never reach the study. Inside the study each fold's
Featurizer is fit on that fold's training rows only; the fold matrices are built once and
shared by every trial (they do not depend on the trial's params).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from aiml024.api import ExperimentSpec

from .features import Featurizer
from .learners import get_learner
from .metrics import direction_of, fold_score, parse_objective, score

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class DataError(ValueError):
    """The training data cannot support the requested experiment."""


# -- data -------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The labelled rows of the clean table: raw feature frame, encoded target, types."""

    X: pd.DataFrame
    y: np.ndarray
    rows: np.ndarray  # positions of these rows in the clean table
    task: str
    classes: list[Any]
    types: dict[str, str]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def training_data(
    clean: pd.DataFrame,
    spec: ExperimentSpec,
    types: dict[str, str] | None = None,
    target_classes: Sequence[Any] | None = None,
) -> TrainingData:
    target = spec.target
    if target not in clean.columns:
        raise DataError(f"target column {target!r} is not in the data")
    labelled = clean[target].notna().to_numpy()
    rows = np.flatnonzero(labelled)
    frame = clean.iloc[rows].reset_index(drop=True)
    excluded = {target, spec.id_column}
    X = frame[[c for c in frame.columns if c not in excluded]]
    types = {c: k for c, k in (types or infer_types(X)).items() if c in X.columns}
    if spec.task == "regression":
        values = pd.to_numeric(frame[target], errors="coerce")
        if values.isna().any():
            raise DataError(f"target column {target!r} holds non-numeric values")
        return TrainingData(X, values.to_numpy(float), rows, spec.task, [], types)
    classes = _classes(frame[target], target_classes)
    if len(classes) < 2:
        raise DataError(f"target column {target!r} has a single class: {classes!r}")
    codes = pd.Categorical(frame[target], categories=classes).codes.astype(np.int64)
    return TrainingData(X, codes, rows, spec.task, classes, types)


def _classes(values: pd.Series, declared: Sequence[Any] | None) -> list[Any]:
    observed = pd.unique(values.dropna())
    if declared and set(observed) <= set(declared):
        return [_native(c) for c in declared if c in set(observed)]
    return sorted((_native(c) for c in observed), key=lambda c: (str(type(c)), c))


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def infer_types(X: pd.DataFrame) -> dict[str, str]:
    """A fallback when validate sent no types: numeric, boolean, datetime or categorical."""
    types = {}
    for column in X.columns:
        dtype = X[column].dtype
        if pd.api.types.is_bool_dtype(dtype):
            types[column] = "boolean"
        elif pd.api.types.is_numeric_dtype(dtype):
            types[column] = "numeric"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            types[column] = "datetime"
        else:
            types[column] = "categorical"
    return types


def make_featurizer(spec: ExperimentSpec, types: dict[str, str]) -> Featurizer:
    return Featurizer(
        types=types,
        text_columns=list(spec.features.text_columns),
        datetime_parts=list(spec.features.datetime_parts),
        drop_columns=list(spec.features.drop_columns),
        text_max_features=spec.features.text.max_features,
    )


# -- splits -----------------------------------------------------------------------------------


@dataclass
class Split:
    """Positions into TrainingData: the holdout, the search rows and their fold ids."""

    holdout: np.ndarray
    train: np.ndarray
    fold_of: np.ndarray  # fold id of each train row

    def folds(self) -> list[np.ndarray]:
        """Validation positions within `train` for each fold."""
        return [np.flatnonzero(self.fold_of == k) for k in range(int(self.fold_of.max()) + 1)]


def make_split(data: TrainingData, spec: ExperimentSpec) -> Split:
    seed, n_folds = spec.search.seed, spec.split.folds
    positions = np.arange(len(data.y))
    classify = data.task != "regression"
    chronological = spec.split.strategy == "time-series" and spec.time_column
    if classify:
        counts = np.bincount(data.y, minlength=data.n_classes)
        need = n_folds + 2
        if counts.min() < need:
            rare = data.classes[int(counts.argmin())]
            raise DataError(
                f"target class {rare!r} has only {counts.min()} rows; need at least {need} for "
                f"a holdout and {n_folds} folds"
            )
    if chronological:
        if spec.time_column not in data.X.columns:
            raise DataError(f"time column {spec.time_column!r} is not in the data")
        times = pd.to_datetime(data.X[spec.time_column], errors="coerce", utc=True).to_numpy()
        order = np.argsort(times, kind="stable")
        cut = len(order) - max(1, round(len(order) * spec.split.holdout_fraction))
        train, holdout = np.sort(order[:cut]), np.sort(order[cut:])
        splitter: Any = KFold(n_folds, shuffle=False)
        train_order = train[np.argsort(times[train], kind="stable")]
    else:
        train, holdout = train_test_split(
            positions,
            test_size=spec.split.holdout_fraction,
            random_state=seed,
            stratify=data.y if classify else None,
        )
        train, holdout = np.sort(train), np.sort(holdout)
        train_order = train
        if classify and spec.split.strategy != "kfold":
            splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        else:
            splitter = KFold(n_folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(train), dtype=np.int64)
    index_in_train = np.searchsorted(train, train_order)
    for k, (_, val) in enumerate(splitter.split(train_order, data.y[train_order])):
        fold_of[index_in_train[val]] = k
    return Split(holdout=holdout, train=train, fold_of=fold_of)


def split_document(split: Split, data: TrainingData, id_values: pd.Series | None) -> dict:
    """split.json: positions in the clean table, so evaluate reuses exactly this split."""
    doc: dict[str, Any] = {
        "rows": int(data.rows.max() + 1) if len(data.rows) else 0,
        "holdout": data.rows[split.holdout].tolist(),
        "train": data.rows[split.train].tolist(),
        "folds": split.fold_of.tolist(),
    }
    if id_values is not None:
        doc["holdoutIds"] = [_native(v) for v in id_values.iloc[data.rows[split.holdout]]]
    return doc


def split_from_document(doc: dict, data: TrainingData) -> Split:
    position = {int(r): i for i, r in enumerate(data.rows)}
    try:
        holdout = np.array([position[r] for r in doc["holdout"]], dtype=np.int64)
        train = np.array([position[r] for r in doc["train"]], dtype=np.int64)
    except KeyError as missing:
        raise DataError(f"split.json names row {missing} that holds no labelled row") from None
    return Split(holdout=holdout, train=train, fold_of=np.asarray(doc["folds"], dtype=np.int64))


# -- the study --------------------------------------------------------------------------------


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


class Searcher:
    """Runs the cross-validated study on the search rows of a TrainingData."""

    def __init__(
        self,
        data: TrainingData,
        split: Split,
        spec: ExperimentSpec,
        n_jobs: int = 1,
        on_trial: Callable[[dict[str, Any]], None] | None = None,
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
        self.deadline = math.inf

    def featurize_folds(self) -> None:
        X = self._data.X.iloc[self._split.train].reset_index(drop=True)
        for val in self.folds:
            train = np.setdiff1d(np.arange(len(self.y)), val)
            featurizer = make_featurizer(self.spec, self._data.types)
            X_train = featurizer.fit_transform(X.iloc[train])
            X_val = featurizer.transform(X.iloc[val])
            self._cache.append(Fold(val, X_train, self.y[train], X_val, self.y[val]))

    def run(self, study: optuna.Study, n_trials: int, deadline: float) -> SearchOutcome:
        self.deadline = deadline
        if not self._cache:
            self.featurize_folds()
        remaining = deadline - time.monotonic()
        if n_trials > 0 and remaining > 0:
            study.optimize(
                self.objective,
                n_trials=n_trials,
                timeout=remaining,
                n_jobs=self.spec.search.parallelism,
                catch=(Exception,),
                callbacks=[self._report],
            )
        return self.outcome(study)

    def objective(self, trial: optuna.Trial) -> float:
        learner = get_learner(trial.suggest_categorical("learner", self.spec.search.learners))
        params = learner.search_space(trial)
        first = not self.records  # the first trial always finishes, on fair shares of time
        oof = np.full((len(self.y), self.n_classes) if self.n_classes else len(self.y), np.nan)
        values, rounds, started = [], [], time.monotonic()
        for k, fold in enumerate(self._cache):
            now = time.monotonic()
            if first:
                fold_deadline = now + max(self.deadline - now, 0.0) / (len(self._cache) - k)
            else:
                spent_per_fold = (now - started) / k if k else 0.0
                if now + spent_per_fold > self.deadline:
                    raise optuna.TrialPruned("out of time")
                fold_deadline = self.deadline
            estimator = learner.make(params, self.seed, self.task, self.n_classes, self.n_jobs)
            kept = learner.fit(
                estimator,
                fold.X_train,
                fold.y_train,
                fold.X_val,
                fold.y_val,
                patience=self.spec.search.early_stopping.patience_rounds,
                deadline=fold_deadline,
            )
            if not first and time.monotonic() > self.deadline:
                raise optuna.TrialPruned("out of time")
            pred = learner.predict(estimator, fold.X_val)
            oof[fold.val] = pred
            values.append(score(self.metric, fold.y_val, pred, self.n_classes))
            if kept is not None:
                rounds.append(kept)
            trial.report(float(np.mean(values)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        value = float(np.mean(values))
        best_iteration = int(round(np.mean(rounds))) if rounds else None
        trial.set_user_attr("best_iteration", best_iteration)
        self.records[trial.number] = TrialRecord(
            trial.number, learner.name, params, value, oof, best_iteration
        )
        return value

    def _report(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
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

    def outcome(self, study: optuna.Study) -> SearchOutcome:
        sign = -1.0 if self.direction == "maximize" else 1.0
        records = sorted(self.records.values(), key=lambda r: (sign * r.value, r.number))
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
        if ensemble.enabled and len(records) >= 2:
            top = records[: max(ensemble.size, 2)]
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


def caruana(
    predictions: Sequence[np.ndarray],
    y: np.ndarray,
    folds: Sequence[np.ndarray],
    metric: str,
    n_classes: int = 0,
    rounds: int = 20,
) -> tuple[np.ndarray, float]:
    """Greedy ensemble selection with replacement (Caruana et al. 2004) on out-of-fold
    predictions; starts from the best single model and keeps the best prefix. Returns the
    weights (summing to 1) and the ensemble's cross-validated value."""
    sign = 1.0 if direction_of(metric) == "maximize" else -1.0

    def value_of(pred: np.ndarray) -> float:
        return fold_score(metric, y, pred, folds, n_classes)

    singles = [value_of(p) for p in predictions]
    first = int(np.argmax([sign * v for v in singles]))
    counts = np.zeros(len(predictions))
    counts[first] = 1
    blend = predictions[first].astype(float)
    best_counts, best_value = counts.copy(), singles[first]
    for _ in range(rounds - 1):
        n = counts.sum()
        trials = [(blend * n + p) / (n + 1) for p in predictions]
        values = [value_of(t) for t in trials]
        pick = int(np.argmax([sign * v for v in values]))
        counts[pick] += 1
        blend = trials[pick]
        if sign * values[pick] > sign * best_value + 1e-12:
            best_counts, best_value = counts.copy(), values[pick]
    return best_counts / best_counts.sum(), float(best_value)


def blend(predictions: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * np.asarray(p, dtype=float) for p, w in zip(predictions, weights, strict=True))


# -- storage and the study --------------------------------------------------------------------


def open_storage(url: str | None, default_journal: Path) -> Any:
    """Optuna storage: `journal:///path` or empty (a journal file), else an Optuna URL."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url and not url.startswith("journal://"):
        return url
    path = Path(url.removeprefix("journal://")) if url else default_journal
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def create_study(spec: ExperimentSpec, storage: Any, name: str, n_folds: int) -> optuna.Study:
    search = spec.search
    seed = search.seed
    samplers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            n_startup_trials=8,
            constant_liar=search.parallelism > 1,
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    stopping = search.early_stopping
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if stopping.enabled and stopping.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    elif stopping.enabled and stopping.pruner == "successive-halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    elif stopping.enabled and stopping.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_folds)
    _, direction = parse_objective(spec.effective_objective)
    return optuna.create_study(
        storage=storage,
        sampler=samplers[search.sampler](),
        pruner=pruner,
        study_name=name,
        direction=direction,
        load_if_exists=True,
    )


def enqueue_defaults(
    study: optuna.Study, learners: Sequence[str], limit: int, per_learner: int = 2
) -> int:
    """Warm start: known-good configurations first, interleaved across learners (at most
    `limit`, so no queued trial outlives the run)."""
    queued = 0
    for i in range(per_learner):
        for name in learners:
            learner = get_learner(name)
            if i < len(learner.defaults) and queued < limit:
                params = {f"{name}.{k}": v for k, v in learner.defaults[i].items()}
                study.enqueue_trial({"learner": name, **params}, skip_if_exists=True)
                queued += 1
    return queued
