"""Hyperparameter search: holdout split, cross-validated Optuna study, Caruana ensembling.

The holdout rows are chosen first and never reach the study. Inside the study each fold's
Featurizer is fit on that fold's training rows only; the fold matrices are built once and
shared by every trial (they do not depend on the trial's params).

Several workers may share one study (journal file with a lock, or an RDB URL such as
PostgreSQL): each runs its own share of the trial cap (`worker_quota`) with its own sampler seed,
records `worker` on its trials, and hands each finished trial's out-of-fold predictions to an
`oof_sink` (the search step persists them to the shared search directory). `records_from_study`
rebuilds the ranked records from the study and those files, so the leaderboard and ensemble
come from every worker's trials.
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

from . import portfolio
from .features import Featurizer
from .learners import DeadlineExceeded, get_learner, infer, train
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


# The time budget covers the search and evaluate's refit: the search stops early enough to
# leave the refit of its likely pick (the ensemble's candidates, each on k/(k-1) x a fold's
# rows: ~REFIT_FACTOR x its mean fold fit) and evaluate's fixed work (interpreter and imports,
# the baseline, the latency probe, the bundle and card: EVALUATE_OVERHEAD_SECONDS).
REFIT_FACTOR = 1.3
EVALUATE_OVERHEAD_SECONDS = 2.5


def refit_seconds(record: TrialRecord) -> float:
    """Estimated seconds to refit this trial's model on all the search rows."""
    return REFIT_FACTOR * (record.fit_seconds or 0.0)


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
        """Seconds the search leaves before the budget's end: evaluate's fixed work and the
        refit of the trials it would most likely fit (the ensemble's candidates, else the
        best), estimated from their measured fold fits."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        records = sorted(list(self.records.values()), key=lambda r: (sign * r.value, r.number))
        keep = top_k(self.spec) if self.spec.search.ensemble.enabled else 1
        return EVALUATE_OVERHEAD_SECONDS + sum(refit_seconds(r) for r in records[:keep])

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


def trial_params(trial: optuna.trial.FrozenTrial) -> tuple[str, dict[str, Any]]:
    """(learner, its params without the `<learner>.` prefix) of a trial."""
    learner = str(trial.params["learner"])
    prefix = f"{learner}."
    return learner, {k[len(prefix) :]: v for k, v in trial.params.items() if k.startswith(prefix)}


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
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url and not url.startswith("journal://"):
        return rdb_storage(url)
    path = Path(url.removeprefix("journal://")) if url else default_journal
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def rdb_storage(url: str, attempts: int = 6) -> Any:
    """An RDB storage (PostgreSQL in a cluster). N workers starting at once on an empty
    database race to create Optuna's tables: the losers retry once the winner is done. A
    heartbeat lets a live worker mark a crashed worker's RUNNING trials as failed."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    for attempt in range(attempts):
        try:
            return RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def worker_quota(trials: int, workers: int, worker: int) -> int:
    """Worker `worker`'s share of the trial cap; the shares add up to exactly `trials`."""
    return trials // workers + (1 if worker < trials % workers else 0)


def make_pruner(spec: ExperimentSpec, n_folds: int) -> optuna.pruners.BasePruner:
    """spec.search.earlyStopping.pruner over the folds as the resource: a trial reports its
    running mean after each fold and stops early when it falls behind."""
    stopping = spec.search.early_stopping
    if not stopping.enabled or stopping.pruner == "none":
        return optuna.pruners.NopPruner()
    if stopping.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if stopping.pruner == "successive-halving":  # asynchronous (ASHA): no worker waits
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3, min_early_stopping_rate=0
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(n_folds, 2), reduction_factor=3
    )


def create_study(
    spec: ExperimentSpec, storage: Any, name: str, n_folds: int, worker: int = 0
) -> optuna.Study:
    """Create or load the study; each worker samples with its own seed (seed + worker)."""
    search = spec.search
    seed = search.seed + worker
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
    _, direction = parse_objective(spec.effective_objective)
    return optuna.create_study(
        storage=storage,
        sampler=samplers[search.sampler](),
        pruner=make_pruner(spec, n_folds),
        study_name=name,
        direction=direction,
        load_if_exists=True,
    )


def warm_start_configs(kind: str, learners: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """The portfolio of this task kind (or a learner's built-in defaults where the portfolio
    has none), round-robin across the spec's learners in their order, at most `limit`."""
    per_learner = {
        name: portfolio.configs(kind, name) or [dict(p) for p in get_learner(name).defaults]
        for name in learners
    }
    configs: list[dict[str, Any]] = []
    depth = max((len(v) for v in per_learner.values()), default=0)
    for i in range(depth):
        for name in learners:
            if i < len(per_learner[name]) and len(configs) < limit:
                params = {f"{name}.{k}": v for k, v in per_learner[name][i].items()}
                configs.append({"learner": name, **params})
    return configs


def enqueue_warm_start(
    study: optuna.Study,
    kind: str,
    learners: Sequence[str],
    limit: int,
    worker: int = 0,
    workers: int = 1,
) -> int:
    """Warm start: queue the portfolio's configurations first (at most `limit`, so no queued
    trial outlives the run). With several workers, worker w queues configurations w, w+N, ...
    so each is queued exactly once without coordination; a restarted worker skips its own."""
    queued = {t.user_attrs.get("warmStart") for t in study.get_trials(deepcopy=False)}
    count = 0
    for j, config in enumerate(warm_start_configs(kind, learners, limit)):
        if j % workers == worker and j not in queued:
            study.enqueue_trial(config, user_attrs={"warmStart": j})
            count += 1
    return count
