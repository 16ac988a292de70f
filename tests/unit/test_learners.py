"""Every registered learner honours the same contract: search space, defaults, fit, predict."""

from __future__ import annotations

import pickle
import time

import numpy as np
import optuna
import pytest

from aiml024.runtime.learners import REGISTRY, DeadlineExceeded, EnsembleEstimator, get_learner

NAMES = sorted(REGISTRY)


def xy(task: str, n: int = 300, n_classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(X.shape) < 0.05] = np.nan
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1])
    if task == "regression":
        return X, signal + rng.normal(scale=0.1, size=n)
    edges = np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])
    return X, np.digitize(signal, edges)


def test_the_registry_covers_every_learner_the_spec_accepts() -> None:
    assert {"lightgbm", "xgboost", "random_forest", "extra_trees", "linear", "knn"} <= set(NAMES)
    with pytest.raises(KeyError, match="unknown learner"):
        get_learner("nope")


@pytest.mark.parametrize("name", NAMES)
def test_search_space_samples_every_dimension_and_defaults_fit_inside_it(name: str) -> None:
    learner = get_learner(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = learner.search_space(study.ask())
    assert set(params) == set(learner.space)
    assert learner.defaults, "warm start needs at least one known-good configuration"
    for default in learner.defaults:
        assert set(default) == set(learner.space)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "task,n_classes", [("classification", 2), ("classification", 3), ("regression", 0)]
)
def test_fits_and_predicts(name: str, task: str, n_classes: int) -> None:
    learner = get_learner(name)
    X, y = xy(task, n_classes=n_classes or 2)
    estimator = learner.make(learner.defaults[0], seed=0, task=task, n_classes=n_classes)
    rounds = learner.fit(estimator, X[:200], y[:200], X[200:], y[200:], patience=10)
    pred = learner.predict(estimator, X[200:])
    if task == "regression":
        assert pred.shape == (100,)
        assert np.corrcoef(pred, y[200:])[0, 1] > 0.5
    else:
        assert pred.shape == (100, n_classes)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-6)
    assert (rounds is not None) == learner.boosting
    if learner.boosting:
        assert 1 <= rounds < 5000


@pytest.mark.parametrize("name", [n for n in NAMES if get_learner(n).boosting])
def test_boosting_stops_at_the_deadline(name: str) -> None:
    learner = get_learner(name)
    X, y = xy("classification", n=2000)
    params = {**learner.defaults[0], "learning_rate": 0.001}
    estimator = learner.make(params, seed=0, task="classification", n_classes=2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):  # cut short by the clock: never passed off as done
        learner.fit(estimator, X, y, X, y, patience=5000, deadline=started + 0.5)
    assert time.monotonic() - started < 1.5


def test_ensemble_estimator_speaks_the_original_labels_and_pickles() -> None:
    X, y = xy("classification")
    labels = np.where(y == 1, "yes", "no")
    ensemble = EnsembleEstimator(
        members=[
            ("lightgbm", get_learner("lightgbm").defaults[0], 50),
            ("linear", {"C": 1.0}, None),
        ],
        weights=[0.7, 0.3],
        task="classification",
        classes=["no", "yes"],
    ).fit(X, labels)
    restored = pickle.loads(pickle.dumps(ensemble))
    proba = restored.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert set(restored.predict(X)) <= {"no", "yes"}
    assert (restored.predict(X) == labels).mean() > 0.8


@pytest.mark.parametrize("name", NAMES)
def test_options_are_searched_as_extra_dimensions_and_applied_by_train(name: str) -> None:
    from aiml024.runtime.learners import infer, train

    learner = get_learner(name)
    extra = learner.extra_space("classification", imbalanced=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = learner.search_space(study.ask(), extra)
    assert set(params) == set(learner.space) | set(extra)
    X, y = xy("classification")
    fitted, _ = train(learner, {**learner.defaults[0], **params}, 0, "classification", X, y,
                      n_classes=2, n_estimators=20)  # fmt: skip
    assert infer(learner, fitted, X).shape == (len(X), 2)
    X, y = xy("regression")
    y = np.exp(y)
    fitted, _ = train(learner, {**learner.defaults[0], "target_transform": "log1p"}, 0,
                      "regression", X, y, n_estimators=20)  # fmt: skip
    assert fitted.log_target and np.corrcoef(infer(learner, fitted, X), y)[0, 1] > 0.5
