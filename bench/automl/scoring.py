"""Test-fold metrics and the suite summary (normalized scores, ranks, budget overruns)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

# Primary metric per task, and whether higher is better.
PRIMARY = {"binary": ("auc", True), "multiclass": ("log_loss", False),
           "regression": ("rmse", False)}
BASELINE = "lightgbm"
EPS = 1e-15


def probabilities(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """`proba:<class>` columns in `classes` order; a class the model never saw gets 0."""
    columns = {c.removeprefix("proba:"): predictions[c] for c in predictions.columns
               if c.startswith("proba:")}
    P = np.column_stack([
        columns[c].to_numpy(dtype=float) if c in columns else np.zeros(len(predictions))
        for c in classes
    ])
    P = np.clip(np.nan_to_num(P, nan=0.0), 0.0, 1.0)
    total = P.sum(axis=1, keepdims=True)
    return np.where(total > 0, P / np.where(total > 0, total, 1), 1.0 / len(classes))


def score(task: str, y_true: pd.Series, predictions: pd.DataFrame, classes: list[str] | None,
          positive: str | None) -> dict[str, float]:
    """All metrics of one test fold; labels compared as strings (CSV round trips vary)."""
    if task == "regression":
        y = y_true.to_numpy(dtype=float)
        pred = predictions["prediction"].to_numpy(dtype=float)
        return {"rmse": float(np.sqrt(metrics.mean_squared_error(y, pred))),
                "r2": float(metrics.r2_score(y, pred))}
    assert classes is not None
    y = y_true.astype(str).to_numpy()
    P = probabilities(predictions, classes)
    out = {
        "log_loss": float(metrics.log_loss(y, np.clip(P, EPS, 1), labels=classes)),
        "accuracy": float(metrics.accuracy_score(y, np.asarray(classes)[P.argmax(axis=1)])),
    }
    if task == "binary":
        assert positive is not None
        out["auc"] = float(metrics.roc_auc_score(y == positive, P[:, classes.index(positive)]))
    else:
        out["auc_macro_ovr"] = float(
            metrics.roc_auc_score(y, P, multi_class="ovr", average="macro", labels=classes)
        ) if len(set(y)) == len(classes) else math.nan
    return out


def summarize(records: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Per-dataset means over folds, normalized scores, average ranks, overruns, models."""
    ok = [r for r in records if r.get("status") == "ok"]
    frameworks = sorted({r["framework"] for r in records}, key=_framework_order)
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    table: dict[str, dict[str, Any]] = {}
    for name in datasets:
        rows = [r for r in records if r["dataset"] == name]
        task = rows[0]["task"]
        metric, higher = PRIMARY[task]
        cells: dict[str, Any] = {}
        for fw in frameworks:
            runs = [r for r in rows if r["framework"] == fw]
            # A framework that failed any fold gets no score on the dataset (means over the
            # folds it survived would not be comparable).
            if runs and all(r.get("status") == "ok" for r in runs):
                cells[fw] = float(np.mean([r["metrics"][metric] for r in runs]))
            else:
                cells[fw] = None
        oriented = {fw: (v if higher else -v) for fw, v in cells.items() if v is not None}
        table[name] = {"task": task, "metric": metric, "higher_is_better": higher,
                       "scores": cells, "normalized": _normalized(oriented),
                       "ranks": _ranks(oriented, frameworks)}
    per_framework = {}
    for fw in frameworks:
        runs = [r for r in records if r["framework"] == fw]
        done = [r for r in ok if r["framework"] == fw]
        overruns = [r["overrun"] for r in done if r.get("overrun") is not None]
        # Floored at -1 for the mean: where the best framework beats the baseline by a hair,
        # one slightly worse fit would otherwise outweigh every other dataset.
        normalized = [max(-1.0, t["normalized"][fw]) for t in table.values()
                      if t["normalized"].get(fw) is not None]
        per_framework[fw] = {
            "runs": len(runs),
            "failed": len(runs) - len(done),
            "mean_normalized": _mean(normalized),
            "normalized_on": len(normalized),
            "average_rank": _mean([t["ranks"][fw] for t in table.values()]),
            "max_overrun": max(overruns) if overruns else None,
            "mean_overrun": _mean(overruns),
            "max_fit_seconds": max((r["fit_seconds"] for r in done), default=None),
            # In how many runs each model was really trained: a family that never shows up
            # (say AutoGluon's XGBoost) is a broken install, and the comparison would flatter us.
            "models": dict(sorted(Counter(m for r in done for m in r.get("models") or [])
                                  .items())),
            "best_models": dict(pd.Series([str(r.get("best_model")) for r in done])
                                .value_counts().items()) if done else {},
        }
    return {"budget": budget, "frameworks": frameworks, "datasets": table,
            "per_framework": per_framework}


def _normalized(oriented: dict[str, float]) -> dict[str, float | None]:
    """Default LightGBM = 0, the best framework = 1. Where the baseline itself is best, the
    scale is baseline-to-worst instead, so everyone else lands in [-1, 0)."""
    base = oriented.get(BASELINE)
    if base is None or not oriented:
        return {fw: None for fw in oriented}
    best, worst = max(oriented.values()), min(oriented.values())
    scale = best - base if best > base else base - worst
    if scale <= 0:  # everyone tied
        return {fw: 0.0 for fw in oriented}
    return {fw: (v - base) / scale for fw, v in oriented.items()}


def _ranks(oriented: dict[str, float], frameworks: list[str]) -> dict[str, float]:
    """1 = best; a failed framework ranks last; ties share the average rank."""
    values = pd.Series({fw: oriented.get(fw, math.nan) for fw in frameworks}, dtype=float)
    ranks = values.rank(ascending=False, method="average", na_option="bottom")
    return {fw: float(r) for fw, r in ranks.items()}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _framework_order(name: str) -> tuple[int, str]:
    order = ["aiml024", "flaml", "autogluon", BASELINE]
    return (order.index(name) if name in order else len(order), name)


def render(summary: dict[str, Any]) -> str:
    """The summary as plain-text tables."""
    fws = summary["frameworks"]
    width = max(12, *(len(f) + 2 for f in fws))
    lines = [f"budget {summary['budget']:g}s; scores are means over the test folds "
             "(binary: AUC, multiclass: log loss, regression: RMSE); * = best", ""]
    header = f"{'dataset':18s}{'metric':10s}" + "".join(f"{fw:>{width}s}" for fw in fws)
    lines += [header, "-" * len(header)]
    for name, row in summary["datasets"].items():
        oriented = {fw: v if row["higher_is_better"] else -v
                    for fw, v in row["scores"].items() if v is not None}
        best = max(oriented.values()) if oriented else None
        cells = []
        for fw in fws:
            v = row["scores"].get(fw)
            mark = "*" if v is not None and oriented.get(fw) == best else " "
            cells.append(f"{'failed':>{width}s}" if v is None
                         else f"{v:>{width - 1}.4f}{mark}")
        lines.append(f"{name:18s}{row['metric']:10s}" + "".join(cells))
    lines += ["", "normalized score: default LightGBM = 0, best on the dataset = 1, floored at -1, "
              "mean over datasets; overrun = fit seconds / budget - 1", "",
              f"{'framework':12s}{'norm.score':>11s}{'avg.rank':>10s}{'overrun max':>13s}"
              f"{'mean':>8s}{'failed':>8s}"]
    for fw in fws:
        s = summary["per_framework"][fw]
        lines.append(
            f"{fw:12s}{_fmt(s['mean_normalized'], '11.3f')}{_fmt(s['average_rank'], '10.2f')}"
            f"{_fmt(s['max_overrun'], '+13.1%')}{_fmt(s['mean_overrun'], '+8.1%')}"
            f"{s['failed']:>8d}"
        )
    lines += ["", "models trained (in how many successful runs):"]
    for fw in fws:
        s = summary["per_framework"][fw]
        runs = s["runs"] - s["failed"]
        models = ", ".join(f"{m} {n}/{runs}" for m, n in s["models"].items())
        lines.append(f"  {fw}: {models or '-'}")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return f"{'-':>{width}s}" if value is None else format(value, spec)
