"""Fairness audit on the holdout: per-group metrics and the disparities the promotion policy
judges, computed with fairlearn.

For each sensitive attribute (spec.fairness.sensitiveAttributes) the groups are its values; a
numeric attribute with many values is cut into quartile bands first. Figures, per attribute:
`<attribute>.demographic_parity_difference` (the largest gap in selection rate between
groups) and `<attribute>.equalized_odds_difference` (the larger of the largest gaps in true-
and false-positive rate). Binary classification compares the positive decisions; multiclass
takes, per figure, the worst class one-vs-rest. Regression has no decisions: its groups get
error metrics, and no parity figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_GROUPS_NUMERIC = 10  # a numeric attribute with more distinct values is banded


def groups(values: pd.Series) -> pd.Series:
    """The group of each row: the value itself, or a quartile band of a many-valued number."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique(dropna=True) > MAX_GROUPS_NUMERIC:
        banded = pd.qcut(values, 4, duplicates="drop")
        return banded.astype(str).where(values.notna(), "missing")
    return values.astype(object).where(values.notna(), "missing").astype(str)


def audit(
    task: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: pd.DataFrame,
    classes: list[Any],
) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """(figures for the Model's evidence, per-attribute group tables for the card and report).
    `y_true`/`y_pred` are class codes (classification) or values (regression)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error

    figures: dict[str, float] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for attribute in sensitive.columns:
        by = groups(sensitive[attribute].reset_index(drop=True)).to_numpy()
        if task == "regression":
            frame = MetricFrame(
                metrics={"count": count, "mae": mean_absolute_error},
                y_true=y_true, y_pred=y_pred, sensitive_features=by,
            )  # fmt: skip
            tables[attribute] = _rows(frame.by_group)
            continue
        positives = [1] if len(classes) == 2 else list(range(len(classes)))
        parity, odds = 0.0, 0.0
        for positive in positives:
            truth = (np.asarray(y_true) == positive).astype(int)
            decided = (np.asarray(y_pred) == positive).astype(int)
            parity = max(parity, float(
                demographic_parity_difference(truth, decided, sensitive_features=by)))  # fmt: skip
            odds = max(odds, float(
                equalized_odds_difference(truth, decided, sensitive_features=by)))  # fmt: skip
        figures[f"{attribute}.demographic_parity_difference"] = round(parity, 6)
        figures[f"{attribute}.equalized_odds_difference"] = round(odds, 6)
        if len(classes) == 2:
            truth = np.asarray(y_true)
            decided = np.asarray(y_pred)
            frame = MetricFrame(
                metrics={"count": count, "selection_rate": selection_rate,
                         "true_positive_rate": true_positive_rate,
                         "false_positive_rate": false_positive_rate,
                         "accuracy": accuracy_score},
                y_true=truth, y_pred=decided, sensitive_features=by,
            )  # fmt: skip
        else:
            frame = MetricFrame(
                metrics={"count": count, "accuracy": accuracy_score},
                y_true=y_true, y_pred=y_pred, sensitive_features=by,
            )  # fmt: skip
        tables[attribute] = _rows(frame.by_group)
    return figures, tables


def _rows(by_group: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for group, values in by_group.iterrows():
        row: dict[str, Any] = {"group": str(group)}
        for name, value in values.items():
            number = float(value)
            row[str(name)] = int(number) if name == "count" else round(number, 6)
        rows.append(row)
    return rows
