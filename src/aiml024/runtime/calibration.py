"""Probability calibration and decision thresholds for binary classification, all decided on
the search's out-of-fold predictions (rows the model did not train on), never on the holdout.

- `choose_calibration`: isotonic or sigmoid (Platt) calibration, kept only when it lowers the
  Brier score of out-of-fold predictions it did not see (2-fold cross-fitting), by at least
  MIN_GAIN; otherwise the model's own probabilities stand.
- `cost_threshold`: the threshold that minimizes the expected cost of a cost matrix
  (spec.costMatrix) on the (calibrated) out-of-fold probabilities.
- `reliability_curve`: mean predicted probability against the observed rate, per bin.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Method = Literal["isotonic", "sigmoid"]
MIN_GAIN = 0.01  # relative Brier improvement a calibrator must bring to be kept
_EPS = 1e-6


class ProbabilityCalibrator:
    """Maps the positive-class probability of a binary model to a calibrated one."""

    def __init__(self, method: Method, model: Any):
        self.method = method
        self.model = model

    def positive(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            return np.clip(self.model.predict(p), 0.0, 1.0)
        return self.model.predict_proba(_logit(p).reshape(-1, 1))[:, 1]

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """A (n, 2) probability matrix, calibrated."""
        p1 = self.positive(proba[:, 1])
        return np.column_stack([1.0 - p1, p1])


def fit_calibrator(method: Method, p: np.ndarray, y: np.ndarray) -> ProbabilityCalibrator:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model: Any = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        model.fit(np.asarray(p, dtype=float), y)
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6).fit(_logit(p).reshape(-1, 1), y)
    return ProbabilityCalibrator(method, model)


def choose_calibration(
    p: np.ndarray, y: np.ndarray, seed: int = 0
) -> tuple[ProbabilityCalibrator | None, dict[str, Any]]:
    """The calibrator to serve with (None: none helps) and what was measured, from
    out-of-fold positive-class probabilities `p` and 0/1 labels `y`."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    before = brier(p, y)
    report: dict[str, Any] = {"method": "none", "brierBefore": round(before, 6), "candidates": {}}
    if len(np.unique(y)) < 2 or len(y) < 40:
        report["reason"] = "too few out-of-fold rows of both classes to calibrate"
        return None, report
    rng = np.random.default_rng(seed)
    half = np.zeros(len(y), dtype=bool)
    for label in (0, 1):  # stratified halves
        rows = np.flatnonzero(y == label)
        half[rng.permutation(rows)[: len(rows) // 2]] = True
    best: tuple[float, Method] | None = None
    for method in ("isotonic", "sigmoid"):
        crossed = np.empty(len(y))
        for fit_rows, score_rows in ((half, ~half), (~half, half)):
            calibrator = fit_calibrator(method, p[fit_rows], y[fit_rows])  # type: ignore[arg-type]
            crossed[score_rows] = calibrator.positive(p[score_rows])
        score = brier(crossed, y)
        report["candidates"][method] = round(score, 6)
        if best is None or score < best[0]:
            best = (score, method)  # type: ignore[assignment]
    assert best is not None
    if best[0] > before * (1.0 - MIN_GAIN):
        report["reason"] = "no calibrator lowered the out-of-fold Brier score by 1% or more"
        return None, report
    report["method"] = best[1]
    report["brierAfter"] = round(best[0], 6)
    return fit_calibrator(best[1], p, y), report


def cost_threshold(
    p: np.ndarray, y: np.ndarray, false_positive: float, false_negative: float
) -> float:
    """The threshold on the positive-class probability with the least total cost of errors."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    candidates = np.unique(np.concatenate([[0.5], np.quantile(p, np.linspace(0, 1, 201))]))
    costs = [
        false_positive * np.sum((p >= t) & (y == 0)) + false_negative * np.sum((p < t) & (y == 1))
        for t in candidates
    ]
    return float(candidates[int(np.argmin(costs))])


def reliability_curve(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per bin of predicted probability: its mean, the observed positive rate, the rows."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    curve = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            curve.append({
                "low": round(float(edges[b]), 3), "high": round(float(edges[b + 1]), 3),
                "meanPredicted": round(float(p[mask].mean()), 6),
                "observedRate": round(float(y[mask].mean()), 6), "rows": int(mask.sum()),
            })  # fmt: skip
    return curve


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))
