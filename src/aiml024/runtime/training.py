"""Data preparation shared by search and evaluate: the labelled rows of the clean table, the
encoded target and the column types, and the featurizer the spec configures.

Both steps build the same TrainingData from the same clean artifact and the validate step's
result, so the positions in the search's split (splits.split_document) mean the same rows in
evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aiml024.api import ExperimentSpec
from aiml024.api.data_steps import ValidateResult

from .artifacts import CLEAN, read_parquet
from .data import infer_types
from .errors import StepError
from .features import Featurizer


@dataclass
class TrainingData:
    """The labelled rows of the clean table: raw feature frame, encoded target, types."""

    X: pd.DataFrame
    y: np.ndarray
    rows: np.ndarray  # positions of these rows in the clean table
    task: str
    classes: list[Any]
    types: dict[str, str]
    # spec.fairness.sensitiveAttributes of these rows: the groups fairness is measured over
    # (not features unless spec.fairness.allowAsFeatures).
    sensitive: pd.DataFrame | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def training_data(
    clean: pd.DataFrame,
    spec: ExperimentSpec,
    types: Mapping[str, str] | None = None,
    target_classes: Sequence[Any] | None = None,
) -> TrainingData:
    """The labelled rows of `clean` for `spec`. `types` are the validate step's (without them,
    the same inference validate runs, data.infer_types); `target_classes` its class order."""
    target = spec.target
    if target not in clean.columns:
        raise StepError(f"target column {target!r} is not in the data")
    labelled = clean[target].notna().to_numpy()
    rows = np.flatnonzero(labelled)
    frame = clean.iloc[rows].reset_index(drop=True)
    attributes = list(spec.fairness.sensitive_attributes)
    for field, named in (
        ("fairness.sensitiveAttributes", attributes),
        ("explain.immutableFeatures", spec.explain.immutable_features),
    ):
        missing = [c for c in named if c not in frame.columns]
        if missing:
            raise StepError(f"{field} {', '.join(map(repr, missing))} are not columns of the data")
    sensitive = frame[attributes].reset_index(drop=True) if attributes else None
    excluded = {target, spec.id_column}
    if not spec.fairness.allow_as_features:
        excluded |= set(attributes)
    X = frame[[c for c in frame.columns if c not in excluded]]
    known = types or infer_types(X, spec)
    kinds = {c: str(k) for c, k in known.items() if c in X.columns}
    if spec.task == "regression":
        values = pd.to_numeric(frame[target], errors="coerce")
        if values.isna().any():
            raise StepError(f"target column {target!r} holds non-numeric values")
        return TrainingData(X, values.to_numpy(float), rows, spec.task, [], kinds, sensitive)
    classes = _classes(frame[target], target_classes)
    if len(classes) < 2:
        raise StepError(f"target column {target!r} has a single class: {classes!r}")
    codes = pd.Categorical(frame[target], categories=classes).codes.astype(np.int64)
    return TrainingData(X, codes, rows, spec.task, classes, kinds, sensitive)


def load_training(
    inputs: Path, spec: ExperimentSpec, validated: ValidateResult
) -> tuple[pd.DataFrame, TrainingData]:
    """The clean artifact under `inputs` and its labelled rows, typed by the validate result."""
    clean = read_parquet(inputs / CLEAN)
    declared = [c.value for c in validated.target_classes or []]
    return clean, training_data(clean, spec, validated.types, declared)


def _classes(values: pd.Series, declared: Sequence[Any] | None) -> list[Any]:
    observed = pd.unique(values.dropna())
    if declared and set(observed) <= set(declared):
        return [native(c) for c in declared if c in set(observed)]
    return sorted((native(c) for c in observed), key=lambda c: (str(type(c)), c))


def native(value: Any) -> Any:
    """A numpy scalar as the Python value (JSON and pydantic take those)."""
    return value.item() if isinstance(value, np.generic) else value


def make_featurizer(spec: ExperimentSpec, types: dict[str, str]) -> Featurizer:
    return Featurizer(
        types=types,
        text_columns=list(spec.features.text_columns),
        datetime_parts=list(spec.features.datetime_parts),
        drop_columns=list(spec.features.drop_columns),
        text_max_features=spec.features.text.max_features,
    )
