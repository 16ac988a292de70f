"""Metrics on predictions: classification takes a probability matrix (rows x classes, classes
encoded 0..C-1), regression takes the predicted values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("auc", "f1", "accuracy", "logloss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
_MINIMIZE = {"logloss", "rmse", "mae"}


def parse_objective(objective: str) -> tuple[str, str]:
    """'maximize_auc' -> ('auc', 'maximize')."""
    direction, _, metric = objective.partition("_")
    return metric, direction


def direction_of(metric: str) -> str:
    return "minimize" if metric in _MINIMIZE else "maximize"


def better(metric: str, a: float, b: float) -> bool:
    """Whether value a beats value b on this metric."""
    return a < b if metric in _MINIMIZE else a > b


def score(
    metric: str, y: np.ndarray, pred: np.ndarray, n_classes: int = 0, threshold: float = 0.5
) -> float:
    """One metric. y holds class codes (classification) or values (regression)."""
    if metric in REGRESSION_METRICS:
        pred = np.asarray(pred, dtype=float)
        if metric == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, pred)))
        if metric == "mae":
            return float(skm.mean_absolute_error(y, pred))
        return float(skm.r2_score(y, pred))
    proba = _clip(pred)
    labels = list(range(n_classes or proba.shape[1]))
    if metric == "auc":
        if len(np.unique(y)) < 2:
            return 0.5
        if len(labels) == 2:
            return float(skm.roc_auc_score(y, proba[:, 1]))
        return float(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels))
    if metric == "logloss":
        return float(skm.log_loss(y, proba, labels=labels))
    predicted = predict_labels(proba, threshold)
    if metric == "accuracy":
        return float(skm.accuracy_score(y, predicted))
    if metric == "f1":
        if len(labels) == 2:
            return float(skm.f1_score(y, predicted, pos_label=1, zero_division=0))
        return float(skm.f1_score(y, predicted, average="macro", labels=labels, zero_division=0))
    raise ValueError(f"unknown metric {metric!r}")


def predict_labels(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(int)
    return proba.argmax(axis=1)


def all_metrics(
    task: str, y: np.ndarray, pred: np.ndarray, n_classes: int = 0, threshold: float = 0.5
) -> dict[str, float]:
    names = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    return {name: score(name, y, pred, n_classes, threshold) for name in names}


def fold_score(
    metric: str, y: np.ndarray, pred: np.ndarray, folds: Sequence[np.ndarray], n_classes: int = 0
) -> float:
    """Mean of the metric over validation folds (folds: row positions of each fold)."""
    return float(np.mean([score(metric, y[idx], pred[idx], n_classes) for idx in folds]))


def best_f1_threshold(y: np.ndarray, positive_score: np.ndarray) -> float:
    """The threshold on the positive-class score that maximizes F1."""
    precision, recall, thresholds = skm.precision_recall_curve(y, positive_score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best]) if len(thresholds) else 0.5


def calibration(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Brier score and expected calibration error (ECE) of predicted probabilities."""
    proba = _clip(proba)
    onehot = np.eye(proba.shape[1])[y]
    if proba.shape[1] == 2:
        brier = float(np.mean((proba[:, 1] - onehot[:, 1]) ** 2))
        confidence, correct = proba[:, 1], onehot[:, 1]
    else:
        brier = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
        confidence, correct = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return {"brier": brier, "ece": float(ece)}


def _clip(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, dtype=float), 1e-15, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)
