"""AutoGluon Tabular: presets=medium_quality, time_limit = the bench budget, the bench's metric."""

from __future__ import annotations

from importlib import metadata

from autogluon.tabular import TabularPredictor

from .common import Job, parse, write

METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}


def main(job: Job) -> None:
    predictor = TabularPredictor(
        label=job.target,
        problem_type=job.task,
        eval_metric=METRICS[job.task],
        path=str(job.work / "autogluon"),
        verbosity=1,
    )
    with job.timed("fit"):
        predictor.fit(
            job.train,
            presets="medium_quality",
            time_limit=job.budget,
            num_cpus=job.cpus,
            num_gpus=0,
        )
    X_test = job.test[job.X.columns]
    with job.timed("predict"):
        if job.task == "regression":
            predictions, classes = predictor.predict(X_test), None
        else:
            proba = predictor.predict_proba(X_test, as_multiclass=True)
            predictions, classes = proba.to_numpy(), list(proba.columns)
    board = predictor.leaderboard(silent=True)
    failures = predictor.model_failures() if hasattr(predictor, "model_failures") else None
    write(job, predictions, classes, {
        "framework": "autogluon",
        "version": metadata.version("autogluon.tabular"),
        "fit_seconds": job.timings["fit"],
        # The models that were really trained: a missing family (XGBoost, NeuralNetFastAI)
        # means a broken extra or an incompatible dependency, not a choice.
        "models": board["model"].tolist(),
        "best_model": predictor.model_best,
        "leaderboard": board[["model", "score_val", "fit_time"]].to_dict("records"),
        "failures": [] if failures is None or len(failures) == 0
        else failures[["model", "exc_type", "exc_str"]].to_dict("records"),
        "versions": {name: metadata.version(name) for name in
                     ("scikit-learn", "lightgbm", "catboost", "xgboost", "xgboost-cpu",
                      "fastai", "torch")
                     if _installed(name)},
    })


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main(parse())
