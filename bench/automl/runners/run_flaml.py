"""FLAML AutoML: time_budget = the bench budget, the bench's metric, default estimators."""

from __future__ import annotations

import flaml
from flaml import AutoML

from .common import Job, parse, write

METRICS = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def main(job: Job) -> None:
    automl = AutoML()
    with job.timed("fit"):
        automl.fit(
            job.X, job.y,
            task="regression" if job.task == "regression" else "classification",
            metric=METRICS[job.task],
            time_budget=job.budget,
            n_jobs=job.cpus,
            seed=job.seed,
            log_file_name=str(job.work / "flaml.log"),
            verbose=0,
        )
    X_test = job.test[job.X.columns]
    with job.timed("predict"):
        if job.task == "regression":
            predictions, classes = automl.predict(X_test), None
        else:
            predictions, classes = automl.predict_proba(X_test), list(automl.classes_)
    tried = {name: config for name, config in automl.best_config_per_estimator.items()
             if config is not None}
    write(job, predictions, classes, {
        "framework": "flaml",
        "version": flaml.__version__,
        "fit_seconds": job.timings["fit"],
        # Candidates vs. what actually got a trial within the budget.
        "estimator_list": list(automl.best_config_per_estimator),
        "models": sorted(tried),
        "best_model": automl.best_estimator,
        "best_config": automl.best_config,
        "trials": len(automl.config_history),
    })


if __name__ == "__main__":
    main(parse())
