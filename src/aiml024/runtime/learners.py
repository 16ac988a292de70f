"""Learners: plug-ins behind one small base class, registered by name.

Each learner declares its search space as data (`space`) and its fallback warm-start
configurations (`defaults`; the shipped portfolio in `runtime/portfolio/` comes first) beside the
code that builds and fits the estimator. Estimators see the dense Featurizer matrix and class
codes 0..C-1; `predict` returns a probability matrix for classification and values for
regression.

Two options ride along with any learner's params, searched only when the data calls for them
(`Learner.extra_space`): `class_weight` ("none" | "balanced") for strongly imbalanced classes,
as balanced sample weights, and `target_transform` ("none" | "log1p") for a skewed, non-negative
regression target: the model fits log1p(y) and predictions come back through expm1, as
scikit-learn's TransformedTargetRegressor would do, but keeping the early-stopping eval set.
`train` and `infer` apply them; `make`/`fit`/`predict` stay the plain per-learner contract.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

Params = dict[str, Any]
CLASS_WEIGHT = "class_weight"
TARGET_TRANSFORM = "target_transform"
OPTIONS = (CLASS_WEIGHT, TARGET_TRANSFORM)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


Dimension = Float | Int | Choice


class Learner:
    """Base class: name, search space, warm-start defaults, make, fit, predict."""

    name: ClassVar[str]
    space: ClassVar[dict[str, Dimension]] = {}
    defaults: ClassVar[list[Params]] = []
    boosting: ClassVar[bool] = False
    sample_weights: ClassVar[bool] = True  # fit() honours sample_weight

    def extra_space(
        self, task: str, imbalanced: bool = False, log_target: bool = False
    ) -> dict[str, Dimension]:
        """The options worth searching for this data (see the module docstring)."""
        extra: dict[str, Dimension] = {}
        if task != "regression" and imbalanced and self.sample_weights:
            extra[CLASS_WEIGHT] = Choice(("none", "balanced"))
        if task == "regression" and log_target:
            extra[TARGET_TRANSFORM] = Choice(("none", "log1p"))
        return extra

    def search_space(self, trial: Any, extra: dict[str, Dimension] | None = None) -> Params:
        """Sample this learner's params from an Optuna trial (names prefixed `<learner>.`)."""
        params: Params = {}
        for key, dim in {**self.space, **(extra or {})}.items():
            name = f"{self.name}.{key}"
            if isinstance(dim, Float):
                params[key] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Int):
                params[key] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
            else:
                params[key] = trial.suggest_categorical(name, list(dim.options))
        return params

    def make(
        self,
        params: Params,
        seed: int,
        task: str,
        n_classes: int = 0,
        n_jobs: int = 1,
        n_estimators: int | None = None,
    ) -> Any:
        """An unfitted estimator; boosting learners take a fixed round count for refits."""
        raise NotImplementedError

    def fit(
        self,
        estimator: Any,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        patience: int = 50,
        deadline: float | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> int | None:
        """Fit in place; boosting learners early-stop on (X_val, y_val) and raise
        DeadlineExceeded once `deadline` (time.monotonic()) passes: a model cut short by the
        clock is never returned as if it had converged. Returns the number of boosting rounds
        kept, else None."""
        if sample_weight is None:
            estimator.fit(X, y)
        elif hasattr(estimator, "steps"):  # a Pipeline: the weights go to its last step
            estimator.fit(X, y, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})
        else:
            estimator.fit(X, y, sample_weight=sample_weight)
        return None

    def predict(self, estimator: Any, X: np.ndarray) -> np.ndarray:
        if hasattr(estimator, "predict_proba"):
            return np.asarray(estimator.predict_proba(X), dtype=float)
        return np.asarray(estimator.predict(X), dtype=float)


REGISTRY: dict[str, Learner] = {}


def register(cls: type[Learner]) -> type[Learner]:
    REGISTRY[cls.name] = cls()
    return cls


def get_learner(name: str) -> Learner:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown learner {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


MAX_ROUNDS = 5000


class DeadlineExceeded(Exception):  # noqa: N818 - reads as what happened
    """A boosting fit reached its deadline before it finished (or early-stopped)."""


@register
class LightGBM(Learner):
    name = "lightgbm"
    boosting = True
    space = {
        "learning_rate": Float(0.01, 0.2, log=True),
        "num_leaves": Int(4, 128, log=True),
        "min_child_samples": Int(5, 200, log=True),
        "colsample_bytree": Float(0.3, 1.0),
        "subsample": Float(0.5, 1.0),
        "reg_alpha": Float(1e-4, 10.0, log=True),
        "reg_lambda": Float(1e-4, 30.0, log=True),
    }
    defaults = [
        {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 20,
            "colsample_bytree": 0.8,
            "subsample": 0.8,
            "reg_alpha": 1e-3,
            "reg_lambda": 1.0,
        },
        {
            "learning_rate": 0.03,
            "num_leaves": 8,
            "min_child_samples": 50,
            "colsample_bytree": 0.5,
            "subsample": 0.8,
            "reg_alpha": 0.1,
            "reg_lambda": 5.0,
        },
    ]

    def make(self, params, seed, task, n_classes=0, n_jobs=1, n_estimators=None):
        import lightgbm

        cls = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
        return cls(
            n_estimators=n_estimators or MAX_ROUNDS,
            subsample_freq=1,
            random_state=seed,
            n_jobs=n_jobs,
            verbose=-1,
            deterministic=True,
            force_col_wise=True,
            **params,
        )

    def fit(
        self, estimator, X, y, X_val=None, y_val=None, patience=50, deadline=None,
        sample_weight=None,
    ):  # fmt: skip
        import lightgbm

        callbacks: list[Any] = []
        if deadline is not None:
            callbacks.append(_lightgbm_deadline(deadline))
        if X_val is None:
            estimator.fit(X, y, sample_weight=sample_weight, callbacks=callbacks)
            return int(estimator.n_estimators)
        callbacks.append(lightgbm.early_stopping(patience, first_metric_only=True, verbose=False))
        estimator.fit(
            X, y, sample_weight=sample_weight, eval_X=(X_val,), eval_y=(y_val,),
            callbacks=callbacks,
        )  # fmt: skip
        return int(estimator.best_iteration_ or estimator.booster_.current_iteration())


def _lightgbm_deadline(deadline: float) -> Any:
    def stop_at_deadline(env: Any) -> None:
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"stopped by the deadline after {env.iteration + 1} rounds")

    return stop_at_deadline


@register
class XGBoost(Learner):
    name = "xgboost"
    boosting = True
    space = {
        "learning_rate": Float(0.01, 0.2, log=True),
        "max_depth": Int(2, 10),
        "min_child_weight": Float(0.5, 50.0, log=True),
        "colsample_bytree": Float(0.3, 1.0),
        "subsample": Float(0.5, 1.0),
        "reg_alpha": Float(1e-4, 10.0, log=True),
        "reg_lambda": Float(1e-3, 30.0, log=True),
    }
    defaults = [
        {
            "learning_rate": 0.05,
            "max_depth": 6,
            "min_child_weight": 1.0,
            "colsample_bytree": 0.8,
            "subsample": 0.8,
            "reg_alpha": 1e-3,
            "reg_lambda": 1.0,
        },
        {
            "learning_rate": 0.03,
            "max_depth": 3,
            "min_child_weight": 5.0,
            "colsample_bytree": 0.5,
            "subsample": 0.8,
            "reg_alpha": 0.1,
            "reg_lambda": 5.0,
        },
    ]

    def make(self, params, seed, task, n_classes=0, n_jobs=1, n_estimators=None):
        import xgboost

        cls = xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier
        return cls(
            n_estimators=n_estimators or MAX_ROUNDS,
            tree_method="hist",
            random_state=seed,
            n_jobs=n_jobs,
            verbosity=0,
            **params,
        )

    def fit(
        self, estimator, X, y, X_val=None, y_val=None, patience=50, deadline=None,
        sample_weight=None,
    ):  # fmt: skip
        callbacks = [_xgboost_deadline(deadline)] if deadline is not None else None
        if X_val is None:
            estimator.set_params(callbacks=callbacks, early_stopping_rounds=None)
            estimator.fit(X, y, sample_weight=sample_weight, verbose=False)
            estimator.set_params(callbacks=None)
            return int(estimator.get_booster().num_boosted_rounds())
        estimator.set_params(callbacks=callbacks, early_stopping_rounds=patience)
        estimator.fit(X, y, sample_weight=sample_weight, eval_set=[(X_val, y_val)], verbose=False)
        estimator.set_params(callbacks=None)
        return int(estimator.best_iteration) + 1


def _xgboost_deadline(deadline: float) -> Any:
    import xgboost

    class StopAtDeadline(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"stopped by the deadline after {epoch + 1} rounds")
            return False

    return StopAtDeadline()


@register
class RandomForest(Learner):
    name = "random_forest"
    space = {
        "n_estimators": Int(100, 400, log=True),
        "max_features": Float(0.1, 0.8),
        "min_samples_leaf": Int(1, 30, log=True),
    }
    defaults = [{"n_estimators": 200, "max_features": 0.3, "min_samples_leaf": 3}]

    def make(self, params, seed, task, n_classes=0, n_jobs=1, n_estimators=None):
        from sklearn import ensemble

        cls = self._classes(ensemble)[task == "regression"]
        return cls(random_state=seed, n_jobs=n_jobs, **params)

    def _classes(self, ensemble: Any) -> tuple[type, type]:
        return ensemble.RandomForestClassifier, ensemble.RandomForestRegressor


@register
class ExtraTrees(RandomForest):
    name = "extra_trees"

    def _classes(self, ensemble: Any) -> tuple[type, type]:
        return ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor


def _scaled(model: Any) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), model
    )


@register
class Linear(Learner):
    name = "linear"
    space = {"C": Float(1e-3, 100.0, log=True)}
    defaults = [{"C": 1.0}]

    def make(self, params, seed, task, n_classes=0, n_jobs=1, n_estimators=None):
        from sklearn.linear_model import LogisticRegression, Ridge

        if task == "regression":
            return _scaled(Ridge(alpha=1.0 / params["C"]))
        return _scaled(LogisticRegression(C=params["C"], max_iter=1000))


@register
class KNN(Learner):
    name = "knn"
    sample_weights = False
    space = {"n_neighbors": Int(5, 100, log=True), "weights": Choice(("uniform", "distance"))}
    defaults = [{"n_neighbors": 25, "weights": "distance"}]

    def make(self, params, seed, task, n_classes=0, n_jobs=1, n_estimators=None):
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        cls = KNeighborsRegressor if task == "regression" else KNeighborsClassifier
        return _scaled(cls(n_jobs=n_jobs, **params))


@dataclass
class Fitted:
    """A fitted estimator and how its target was transformed."""

    estimator: Any
    log_target: bool = False


def split_options(params: Params) -> tuple[Params, Params]:
    """(the learner's own params, the options `train` applies)."""
    own = {k: v for k, v in params.items() if k not in OPTIONS}
    return own, {k: v for k, v in params.items() if k in OPTIONS}


def train(
    learner: Learner,
    params: Params,
    seed: int,
    task: str,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    n_classes: int = 0,
    n_jobs: int = 1,
    patience: int = 50,
    deadline: float | None = None,
    n_estimators: int | None = None,
) -> tuple[Fitted, int | None]:
    """Make and fit one estimator with its options applied; returns it and the rounds kept."""
    own, options = split_options(params)
    log_target = task == "regression" and options.get(TARGET_TRANSFORM) == "log1p"
    if log_target:
        y = np.log1p(y)
        y_val = None if y_val is None else np.log1p(y_val)
    weight = None
    if task != "regression" and options.get(CLASS_WEIGHT) == "balanced" and learner.sample_weights:
        from sklearn.utils.class_weight import compute_sample_weight

        weight = compute_sample_weight("balanced", y)
    estimator = learner.make(own, seed, task, n_classes, n_jobs, n_estimators)
    kept = learner.fit(
        estimator, X, y, X_val, y_val, patience=patience, deadline=deadline, sample_weight=weight
    )
    return Fitted(estimator, log_target), kept


def infer(learner: Learner, fitted: Fitted | Any, X: np.ndarray) -> np.ndarray:
    if not isinstance(fitted, Fitted):  # a bare estimator (bundles saved before options)
        return learner.predict(fitted, X)
    pred = learner.predict(fitted.estimator, X)
    if fitted.log_target:
        return np.expm1(np.clip(pred, -30.0, 700.0))
    return pred


class EnsembleEstimator(BaseEstimator):
    """The served model: a weighted average of learner estimators (one member for a single
    model). Takes the Featurizer matrix; fit/predict speak the original class labels."""

    def __init__(
        self,
        members: list[tuple[str, Params, int | None]],
        weights: list[float],
        task: str,
        classes: list[Any] | None = None,
        seed: int = 0,
        n_jobs: int = 1,
    ):
        self.members = members
        self.weights = weights
        self.task = task
        self.classes = classes
        self.seed = seed
        self.n_jobs = n_jobs

    def fit(self, X: np.ndarray, y: Any) -> EnsembleEstimator:
        y = np.asarray(y)
        n_classes = 0
        if self.task != "regression":
            self.classes_ = np.asarray(self.classes if self.classes else np.unique(y), dtype=object)
            lookup = {c: i for i, c in enumerate(self.classes_)}
            y = np.asarray([lookup[v] for v in y], dtype=np.int64)
            n_classes = len(self.classes_)
        self.estimators_ = []
        for name, params, rounds in self.members:
            fitted, _ = train(
                get_learner(name), params, self.seed, self.task, X, y, n_classes=n_classes,
                n_jobs=self.n_jobs, n_estimators=rounds,
            )  # fmt: skip
            self.estimators_.append(fitted)
        return self

    def _blend(self, X: np.ndarray) -> np.ndarray:
        total = None
        for (name, _, _), weight, estimator in zip(
            self.members, self.weights, self.estimators_, strict=True
        ):
            part = weight * infer(get_learner(name), estimator, X)
            total = part if total is None else total + part
        return total / float(np.sum(self.weights))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The blend's class probabilities; calibrated when evaluate chose a calibrator on
        out-of-fold predictions (`calibrator_`, aiml024.runtime.calibration)."""
        proba = self._blend(X)
        calibrator = getattr(self, "calibrator_", None)
        return proba if calibrator is None else calibrator.calibrate(proba)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return self._blend(X)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
