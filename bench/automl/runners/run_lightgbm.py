"""Baseline: LightGBM with default parameters, text columns as pandas categories."""

from __future__ import annotations

import lightgbm
import pandas as pd

from .common import Job, parse, write


def frame(X: pd.DataFrame, categories: dict[str, pd.Index]) -> pd.DataFrame:
    """Text columns -> category with the training categories (unseen values become NaN)."""
    X = X.copy()
    for column, levels in categories.items():
        X[column] = pd.Categorical(X[column].astype("object"), categories=levels)
    return X


def main(job: Job) -> None:
    X = job.X
    text = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    categories = {c: pd.Index(sorted(X[c].dropna().astype(str).unique())) for c in text}
    X = frame(X, categories)
    X_test = frame(job.test[X.columns], categories)
    if job.task == "regression":
        model = lightgbm.LGBMRegressor(n_jobs=job.cpus, verbose=-1, random_state=job.seed)
    else:
        model = lightgbm.LGBMClassifier(n_jobs=job.cpus, verbose=-1, random_state=job.seed)
    with job.timed("fit"):
        model.fit(X, job.y)
    with job.timed("predict"):
        predictions = (model.predict(X_test) if job.task == "regression"
                       else model.predict_proba(X_test))
    write(job, predictions, None if job.task == "regression" else list(model.classes_), {
        "framework": "lightgbm",
        "version": lightgbm.__version__,
        "fit_seconds": job.timings["fit"],
        "models": ["LightGBM (defaults)"],
        "best_model": "LightGBM (defaults)",
    })


if __name__ == "__main__":
    main(parse())
