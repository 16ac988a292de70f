"""The model bundle: everything needed to serve one model version, with a content digest.

A bundle is a directory:
    model.joblib   a fitted scikit-learn compatible pipeline taking the raw feature frame
                   (PII handling and feature engineering included), with predict / predict_proba
    bundle.json    BundleMeta: task, target, id column, input columns, classes, metrics
The digest covers every file (sorted by name), so the same training gives the same digest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from .artifacts import path_digest

MODEL_FILE = "model.joblib"
META_FILE = "bundle.json"


class InputColumn(BaseModel):
    name: str
    dtype: Literal["numeric", "categorical", "datetime", "text", "boolean"]


class BundleMeta(BaseModel):
    task: Literal["classification", "regression"]
    target: str
    id_column: str | None = None
    columns: list[InputColumn]
    classes: list[Any] = Field(default_factory=list)
    positive_class: Any = None
    threshold: float = 0.5
    learner: str = ""
    members: list[str] = Field(default_factory=list)
    code_version: str = ""
    # Columns seen in training but not used (empty, constant, dropped PII): clients still send
    # them, so requests carrying them are accepted and the values ignored.
    ignored_columns: list[str] = Field(default_factory=list)
    # What a counterfactual may change each column to (training quantiles or frequent values),
    # and the columns it never changes (spec.explain.immutableFeatures).
    counterfactual_values: dict[str, list[Any]] = Field(default_factory=dict)
    immutable_features: list[str] = Field(default_factory=list)


class Bundle:
    """A loaded bundle: predicts labels and scores for raw request rows."""

    def __init__(self, pipeline: Any, meta: BundleMeta):
        self.pipeline = pipeline
        self.meta = meta

    def frame(self, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """Order and type the request's columns as in training; missing ones become NA."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows)
        unknown = [c for c in df.columns if c not in self.known_columns()]
        if unknown:
            raise ValueError(f"unknown input columns: {', '.join(map(str, unknown))}")
        out = pd.DataFrame(index=df.index)
        for column in self.meta.columns:
            values = df[column.name] if column.name in df else pd.Series(np.nan, index=df.index)
            if column.dtype == "numeric":
                values = pd.to_numeric(values, errors="coerce")
            elif column.dtype == "datetime":
                values = pd.to_datetime(values, errors="coerce", utc=True).dt.tz_localize(None)
            elif column.dtype == "boolean":
                values = values.astype("boolean").astype("float64")
            else:
                values = values.astype("object").where(values.notna(), None)
            out[column.name] = values
        return out

    def known_columns(self) -> set[str]:
        """Every column a request may carry: the inputs, the target, the id, and the columns
        seen in training but not used (ignored)."""
        known = {c.name for c in self.meta.columns} | {self.meta.target, *self.meta.ignored_columns}
        if self.meta.id_column:
            known.add(self.meta.id_column)
        return known

    def predict_proba(self, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """Class probabilities, one column per class (classification bundles only)."""
        if self.meta.task != "classification":
            raise ValueError("predict_proba needs a classification bundle")
        X = self.frame(rows)
        return pd.DataFrame(self._proba(X), columns=list(self.meta.classes), index=X.index)

    def _proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(X), dtype=float)

    def predict(self, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """Return a frame with `label` and `score` (positive-class probability, or the value)."""
        X = self.frame(rows)
        if self.meta.task == "regression":
            values = np.asarray(self.pipeline.predict(X), dtype=float)
            return pd.DataFrame({"label": values, "score": values}, index=X.index)
        proba = self._proba(X)
        classes = list(self.meta.classes)
        if len(classes) == 2:
            score = proba[:, 1]
            labels = np.where(score >= self.meta.threshold, classes[1], classes[0])
        else:
            score = proba.max(axis=1)
            labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        return pd.DataFrame({"label": labels, "score": score}, index=X.index)


def save_bundle(directory: Path, pipeline: Any, meta: BundleMeta) -> str:
    """Write the bundle and return its sha256 digest."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, directory / MODEL_FILE, compress=3)
    (directory / META_FILE).write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    return bundle_digest(directory)


def load_bundle(directory: Path) -> Bundle:
    meta = BundleMeta.model_validate_json((directory / META_FILE).read_text())
    return Bundle(joblib.load(directory / MODEL_FILE), meta)


def bundle_digest(directory: Path) -> str:
    """sha256 over (relative name, content) of every file, in name order."""
    return path_digest(directory)
