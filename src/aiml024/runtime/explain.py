"""Explanations of a served model (a Bundle): what drives its decisions, globally and for one row.

- SHAP (`shap_values`): TreeSHAP from the boosting libraries themselves (LightGBM's
  `pred_contrib`, XGBoost's `pred_contribs`) for each LightGBM or XGBoost member of the
  ensemble, combined with the ensemble's weights. That is exactly SHAP of the weighted average
  of the members' margins (log-odds, or the regression value); the served blend averages
  probabilities instead, so for an ensemble it is a close account, not an exact one. Members
  of other kinds (forests, linear, kNN) are left out and `coverage` says what share of the
  weight the values cover. Values are summed per input column (a text column's SVD
  components and a date's parts count as that column).
- Permutation importance (scikit-learn) over the whole served pipeline: the drop in the
  primary metric when one input column is shuffled; it covers every member.
- PDP and ICE (`partial_dependence`), by hand because the inputs are a typed frame of mixed
  kinds: each row's prediction as one column sweeps a grid, and their mean.
- Counterfactuals (`counterfactual`): for one row, the fewest changes, one column at a time
  (greedy), that flip the decision, never touching the immutable columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .bundle import Bundle
from .learners import Fitted

TREE_MEMBERS = ("lightgbm", "xgboost")
# explain_model plans its parts to end by this share of its budget: a part's cost is
# estimated from a probe, and what runs past the estimate still has room.
WORKING_SHARE = 0.7


# --- what is explained ---------------------------------------------------------------------------


def decision_score(bundle: Bundle, X: pd.DataFrame) -> np.ndarray:
    """The number a decision is made on: the positive-class probability (binary), the
    predicted class's probability (multiclass), or the value (regression)."""
    if bundle.meta.task == "regression":
        return np.asarray(bundle.pipeline.predict(X), dtype=float)
    proba = np.asarray(bundle.pipeline.predict_proba(X), dtype=float)
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def decisions(bundle: Bundle, X: pd.DataFrame) -> np.ndarray:
    return bundle.predict(X)["label"].to_numpy()


# --- SHAP ----------------------------------------------------------------------------------------


def shap_values(bundle: Bundle, X: pd.DataFrame) -> dict[str, Any]:
    """Per-row, per-input-column contributions (`values`, rows x columns, in `space`), the
    base value, and which members they cover. Multiclass: toward each row's predicted class."""
    pipeline = bundle.pipeline
    ensemble = pipeline.steps[-1][1]
    if not hasattr(ensemble, "estimators_") or "features" not in pipeline.named_steps:
        return {"method": "none", "reason": "the bundle's model is not an aiml024 ensemble"}
    featurizer = pipeline.named_steps["features"]
    Z = np.asarray(pipeline[:-1].transform(X), dtype=float)
    names = list(featurizer.get_feature_names_out())
    columns = list(X.columns)
    owner = np.asarray([_input_column(name, columns) for name in names])
    total_weight = float(np.sum(ensemble.weights))
    n_classes = len(bundle.meta.classes) if bundle.meta.task == "classification" else 0
    combined: np.ndarray | None = None
    covered, used = 0.0, []
    for (learner, _, _), weight, fitted in zip(
        ensemble.members, ensemble.weights, ensemble.estimators_, strict=True
    ):
        if learner not in TREE_MEMBERS:
            continue
        contrib = _contributions(learner, fitted, Z, n_classes)  # rows x outputs x (features+1)
        part = float(weight) * contrib
        combined = part if combined is None else combined + part
        covered += float(weight)
        used.append(learner)
    if combined is None:
        return {"method": "none", "reason": "no LightGBM or XGBoost member to take TreeSHAP from"}
    combined /= covered
    if combined.shape[1] > 1:  # multiclass: toward each row's predicted class
        predicted = np.asarray(ensemble.predict_proba(Z)).argmax(axis=1)
        chosen = combined[np.arange(len(Z)), predicted]
    else:
        chosen = combined[:, 0]
    per_feature, base = chosen[:, :-1], chosen[:, -1]
    values = np.zeros((len(Z), len(columns)))
    for index, column in enumerate(columns):
        mask = owner == column
        if mask.any():
            values[:, index] = per_feature[:, mask].sum(axis=1)
    space = "raw" if bundle.meta.task == "regression" else "log-odds"
    return {
        "method": "tree-shap", "space": space, "members": used,
        "coverage": round(covered / total_weight, 6), "columns": columns,
        "values": values, "base": base,
    }  # fmt: skip


def _contributions(learner: str, fitted: Any, Z: np.ndarray, n_classes: int) -> np.ndarray:
    estimator = fitted.estimator if isinstance(fitted, Fitted) else fitted
    width = Z.shape[1] + 1
    if learner == "lightgbm":
        raw = np.asarray(estimator.predict(Z, pred_contrib=True), dtype=float)
    else:
        import xgboost

        raw = np.asarray(
            estimator.get_booster().predict(xgboost.DMatrix(Z), pred_contribs=True), dtype=float
        )
    outputs = n_classes if n_classes > 2 else 1
    return raw.reshape(len(Z), outputs, width)


def _input_column(feature: str, columns: Sequence[str]) -> str:
    if feature in columns:
        return feature
    head = feature.split("__", 1)[0]
    return head if head in columns else feature


def global_shap(shap: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean |SHAP| per input column, largest first."""
    if shap.get("method") != "tree-shap":
        return []
    means = np.abs(shap["values"]).mean(axis=0)
    order = np.argsort(-means)
    return [{"feature": shap["columns"][i], "meanAbs": round(float(means[i]), 6)} for i in order]


def local_explanation(bundle: Bundle, row: pd.DataFrame) -> dict[str, Any]:
    """One row's SHAP values by input column (largest magnitude first), base value and the
    decision; what the served endpoint's `explain` option returns."""
    shap = shap_values(bundle, row)
    out: dict[str, Any] = {"decision": str(decisions(bundle, row)[0])}
    if shap.get("method") != "tree-shap":
        return {**out, "method": "none", "reason": shap.get("reason")}
    values = shap["values"][0]
    order = np.argsort(-np.abs(values))
    return {
        **out, "method": "tree-shap", "space": shap["space"], "coverage": shap["coverage"],
        "base": round(float(shap["base"][0]), 6),
        "contributions": [
            {"feature": shap["columns"][i], "value": _plain(row.iloc[0, i]),
             "contribution": round(float(values[i]), 6)}
            for i in order
        ],
    }  # fmt: skip


# --- permutation importance, PDP/ICE -------------------------------------------------------------


def permutation_importance(
    bundle: Bundle,
    X: pd.DataFrame,
    y: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    repeats: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The drop of `score(y, model output)` (higher is better) when each column is shuffled."""
    from sklearn.inspection import permutation_importance as sklearn_importance

    def scorer(estimator: Any, frame: pd.DataFrame, truth: np.ndarray) -> float:
        output = (
            estimator.predict(frame)
            if bundle.meta.task == "regression"
            else estimator.predict_proba(frame)
        )
        return score(truth, np.asarray(output, dtype=float))

    result = sklearn_importance(
        bundle.pipeline, X, y, scoring=scorer, n_repeats=repeats, random_state=seed, n_jobs=1
    )
    order = np.argsort(-result.importances_mean)
    return [
        {"feature": X.columns[i], "drop": round(float(result.importances_mean[i]), 6),
         "std": round(float(result.importances_std[i]), 6)}
        for i in order
    ]  # fmt: skip


def partial_dependence(
    bundle: Bundle, X: pd.DataFrame, feature: str, grid_size: int = 15, ice_rows: int = 30
) -> dict[str, Any]:
    """PDP (the mean) and ICE (`ice_rows` rows' own curves) of the decision score as
    `feature` sweeps its grid: quantiles of a number, the most frequent values otherwise."""
    values = X[feature]
    numeric = pd.api.types.is_numeric_dtype(values)
    present = values.dropna()
    if numeric:
        grid = list(np.unique(np.quantile(present, np.linspace(0.02, 0.98, grid_size))))
    else:
        grid = list(present.astype(object).value_counts().index[:grid_size])
    curves = np.empty((len(X), len(grid)))
    for j, value in enumerate(grid):
        swept = X.copy()
        swept[feature] = value
        curves[:, j] = decision_score(bundle, swept)
    return {
        "feature": feature, "kind": "numeric" if numeric else "categorical",
        "grid": [_plain(v) for v in grid],
        "pdp": [round(float(v), 6) for v in curves.mean(axis=0)],
        "ice": [[round(float(v), 6) for v in curve] for curve in curves[:ice_rows]],
    }  # fmt: skip


# --- counterfactuals -----------------------------------------------------------------------------


def counterfactual(
    bundle: Bundle,
    row: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    immutable: Sequence[str] | None = None,
    max_changes: int = 3,
    candidates: int = 8,
) -> dict[str, Any]:
    """The fewest single-column changes (at most `max_changes`, greedy: each step takes the
    change that moves the decision score furthest toward another decision) that flip the
    decision for `row`, with values drawn from `reference` (quantiles of a number, frequent
    values otherwise; default: the bundle's own, from its training rows); columns in
    `immutable` (default: the bundle's spec.explain.immutableFeatures) never change. Each
    step scores every candidate change in one batch."""
    immutable = bundle.meta.immutable_features if immutable is None else immutable
    if bundle.meta.task == "regression":
        return {"decision": None, "flipsTo": None, "changes": [], "immutable": list(immutable),
                "reason": "a regression model makes no decision to flip"}  # fmt: skip
    original = str(decisions(bundle, row)[0])
    # Integer columns take the candidates' float quantiles: hold every number as a float.
    # Dates take ISO text (the bundle parses requests so): hold them as objects.
    current = row.astype(
        {c: float for c in row.columns if pd.api.types.is_integer_dtype(row[c])}
        | {c: object for c in row.columns if pd.api.types.is_datetime64_any_dtype(row[c])}
    )
    changed: list[str] = []
    mutable = [c for c in row.columns if c not in set(immutable)]
    options = {
        c: candidate_values(reference[c], candidates)
        if reference is not None
        else list(bundle.meta.counterfactual_values.get(c, []))
        for c in mutable
    }
    toward_lower = _wants_lower(bundle, row)
    for _ in range(max_changes):
        moves = [
            (column, value)
            for column in mutable
            if column not in changed
            for value in options[column]
            if not _same(current.iloc[0][column], value)
        ]
        if not moves:
            break
        batch = pd.concat([current] * len(moves), ignore_index=True)
        for i, (column, value) in enumerate(moves):
            batch.at[i, column] = value
        labels = decisions(bundle, batch).astype(str)
        flipped = np.flatnonzero(labels != original)
        scores = decision_score(bundle, batch)
        pick = int(flipped[0]) if len(flipped) else int(
            np.argmin(scores) if toward_lower else np.argmax(scores))  # fmt: skip
        column, value = moves[pick]
        changed.append(column)
        current = batch.iloc[[pick]].reset_index(drop=True)
        if len(flipped):
            return {"decision": original, "flipsTo": str(labels[pick]),
                    "changes": [_change(c, row.iloc[0][c], current.iloc[0][c]) for c in changed],
                    "immutable": list(immutable)}  # fmt: skip
    return {"decision": original, "flipsTo": None, "changes": [], "immutable": list(immutable),
            "reason": f"no change of at most {max_changes} columns flips the decision"}  # fmt: skip


def _wants_lower(bundle: Bundle, row: pd.DataFrame) -> bool:
    """Whether flipping the decision means lowering the decision score."""
    if bundle.meta.task == "classification" and len(bundle.meta.classes) == 2:
        return bool(decision_score(bundle, row)[0] >= bundle.meta.threshold)
    return True  # multiclass: lower the predicted class's probability


def candidate_values(values: pd.Series, count: int = 8) -> list[Any]:
    """What a counterfactual may set a column to: its distinct values when there are few,
    else quantiles of a number or the most frequent values (JSON-native)."""
    present = values.dropna()
    if present.empty:
        return []
    distinct = present.unique()
    if len(distinct) <= count:  # booleans and small codes: the values themselves
        return [_plain(v) for v in sorted(distinct.tolist(), key=str)]
    if pd.api.types.is_numeric_dtype(present):
        return [float(v) for v in np.unique(np.quantile(present, np.linspace(0.05, 0.95, count)))]
    return [_plain(v) for v in present.astype(object).value_counts().index[:count]]


def _change(feature: str, before: Any, after: Any) -> dict[str, Any]:
    return {"feature": feature, "from": _plain(before), "to": _plain(after)}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


# --- everything, within a time budget ------------------------------------------------------------


def explain_model(
    bundle: Bundle,
    X: pd.DataFrame,
    y: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    budget_seconds: float,
    top_features: int = 5,
    immutable: Sequence[str] = (),
    seed: int = 0,
    shap_rows: int = 500,
    permutation_rows: int = 1000,
    pdp_rows: int = 150,
    examples: int = 3,
) -> dict[str, Any]:
    """explanations.json for the card and the report, on samples of the holdout rows `X`
    (typed as the bundle reads requests) with targets `y` as `score` takes them. Parts run in
    order of what a reviewer needs most; a part that would start after `budget_seconds` is
    listed under `skipped` instead."""
    started = time.perf_counter()
    share = budget_seconds
    budget_seconds *= WORKING_SHARE  # room for the parts that run past a check
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    skipped: list[str] = []

    def sample(limit: int) -> np.ndarray:
        return np.sort(rng.choice(len(X), size=min(limit, len(X)), replace=False))

    def within_budget(part: str) -> bool:
        if time.perf_counter() - started < budget_seconds:
            return True
        skipped.append(part)
        return False

    # SHAP on 100 rows first; on more only as far as a quarter of the budget allows.
    shap_rows_used = sample(min(100, shap_rows))
    shap = shap_values(bundle, X.iloc[shap_rows_used])
    per_row = (time.perf_counter() - started) / max(len(shap_rows_used), 1)
    more = min(shap_rows, int(budget_seconds / 4 / max(per_row, 1e-9)))
    if more > len(shap_rows_used):
        shap_rows_used = sample(more)
        shap = shap_values(bundle, X.iloc[shap_rows_used])
    importance = global_shap(shap)
    timings["shapSeconds"] = time.perf_counter() - started
    out: dict[str, Any] = {
        "shap": {k: v for k, v in shap.items() if k not in ("values", "base", "columns")}
        | {"global": importance, "rows": int(len(shap_rows_used))},
    }

    def affordable(rows: int, calls: int, share: float) -> int:
        """How many rows `calls` predictions may each take within `share` of what is left of
        the budget, from the time one prediction of 100 rows takes here (at least 100)."""
        probe = X.iloc[sample(100)]
        tick = time.perf_counter()
        decision_score(bundle, probe)
        per_row = (time.perf_counter() - tick) / max(len(probe), 1)
        left = max(budget_seconds - (time.perf_counter() - started), 0.0) * share
        return max(100, min(rows, int(left / max(per_row * calls, 1e-9))))

    if within_budget("examples"):
        step = time.perf_counter()
        out["examples"] = [
            {"row": int(i), "explanation": local_explanation(bundle, X.iloc[[int(i)]]),
             "counterfactual": counterfactual(bundle, X.iloc[[int(i)]], X, immutable)}
            for i in sample(examples)
        ]  # fmt: skip
        timings["localSeconds"] = time.perf_counter() - step
    if within_budget("permutationImportance"):
        step = time.perf_counter()
        rows = sample(affordable(permutation_rows, 2 * X.shape[1] + 1, 0.5))
        out["permutationImportance"] = {
            "rows": int(len(rows)),
            "importance": permutation_importance(
                bundle, X.iloc[rows], y[rows], score, repeats=2, seed=seed
            ),
        }
        timings["permutationSeconds"] = time.perf_counter() - step
    ranked = [item["feature"] for item in importance] or [
        item["feature"] for item in out.get("permutationImportance", {}).get("importance", [])
    ]
    if within_budget("partialDependence"):
        step = time.perf_counter()
        pdp_sample = X.iloc[sample(affordable(pdp_rows, 10 * top_features, 0.6))]
        out["partialDependence"] = [
            partial_dependence(bundle, pdp_sample, f, grid_size=10) for f in ranked[:top_features]
        ]
        timings["pdpSeconds"] = time.perf_counter() - step
    timings["totalSeconds"] = time.perf_counter() - started
    out["timings"] = {k: round(v, 3) for k, v in timings.items()}
    out["budgetSeconds"] = round(share, 3)
    out["skipped"] = skipped
    return out
