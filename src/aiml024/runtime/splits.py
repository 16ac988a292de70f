"""The holdout and the cross-validation folds: chosen once by search, reused by evaluate.

The holdout rows are chosen first and never reach the study; split.json records the split as
positions in the clean table so evaluate scores exactly the rows the search never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from aiml024.api import ExperimentSpec

from .errors import StepError
from .training import TrainingData, native


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
            raise StepError(
                f"target class {rare!r} has only {counts.min()} rows; need at least {need} for "
                f"a holdout and {n_folds} folds"
            )
    if chronological:
        if spec.time_column not in data.X.columns:
            raise StepError(f"time column {spec.time_column!r} is not in the data")
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
        doc["holdoutIds"] = [native(v) for v in id_values.iloc[data.rows[split.holdout]]]
    return doc


def split_from_document(doc: dict, data: TrainingData) -> Split:
    position = {int(r): i for i, r in enumerate(data.rows)}
    try:
        holdout = np.array([position[r] for r in doc["holdout"]], dtype=np.int64)
        train = np.array([position[r] for r in doc["train"]], dtype=np.int64)
    except KeyError as missing:
        raise StepError(f"split.json names row {missing} that holds no labelled row") from None
    return Split(holdout=holdout, train=train, fold_of=np.asarray(doc["folds"], dtype=np.int64))
