"""The compiled serving path scores exactly as Bundle.predict, on bundles like evaluate's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from aiml024.runtime.bundle import Bundle, BundleMeta, InputColumn, load_bundle, save_bundle
from aiml024.runtime.calibration import fit_calibrator
from aiml024.runtime.fastpath import InvalidInput, Unsupported, compile_bundle
from aiml024.runtime.features import Featurizer
from aiml024.runtime.learners import EnsembleEstimator
from aiml024.runtime.pii import PiiMasker

N = 240
DTYPES = {
    "tenure": "numeric", "charges": "numeric", "plan": "categorical", "senior": "boolean",
    "autopay": "categorical", "signup": "datetime", "note": "text", "email": "categorical",
}  # fmt: skip
WORDS = ["bill", "high", "great", "service", "cancel", "please", "slow", "fast", "thanks"]


def _table(rng: np.random.Generator, n: int = N) -> pd.DataFrame:
    tenure = rng.integers(1, 72, n).astype(float)
    tenure[rng.random(n) < 0.1] = np.nan
    days = rng.integers(0, 900, n)
    return pd.DataFrame({
        "tenure": tenure,
        "charges": rng.normal(70, 20, n).round(2),
        "plan": rng.choice(["basic", "pro", "max", "rare"], n, p=[0.5, 0.3, 0.19, 0.01]),
        "senior": rng.random(n) < 0.2,
        "autopay": rng.choice(["yes", "no"], n),
        "signup": [str(np.datetime64("2023-01-01") + int(d)) for d in days],
        "note": [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(n)],
        "email": [f"u{i}@{rng.choice(['gmail.com', 'Yahoo.com'])}" for i in range(n)],
    })  # fmt: skip


def _save(
    directory: Path, task: str, members: list[tuple[str, dict[str, Any], int | None]],
    target: np.ndarray, classes: list[Any], calibrator: str | None = None, threshold: float = 0.5,
    log_target: bool = False,
) -> Bundle:  # fmt: skip
    rng = np.random.default_rng(1)
    meta = BundleMeta(
        task=task, target="y", id_column="customer_id", classes=classes, threshold=threshold,
        columns=[InputColumn(name=c, dtype=d) for c, d in DTYPES.items()],  # type: ignore[arg-type]
        ignored_columns=["constant"],
    )  # fmt: skip
    X = Bundle(None, meta).frame(_table(rng))
    types = dict(DTYPES, autopay="boolean")  # 'yes'/'no' strings the Featurizer reads as booleans
    if log_target:
        members = [(n, {**p, "target_transform": "log1p"}, r) for n, p, r in members]
    pipeline = Pipeline([
        ("pii", PiiMasker(columns={"email": "email", "note": "text"}, action="mask")),
        ("features", Featurizer(types=types, text_columns=["note"], text_components=4,
                                datetime_parts=["year", "month", "dayofweek", "dayofyear"])),
        ("model", EnsembleEstimator(members=members, weights=[0.6, 0.4][: len(members)] or [1.0],
                                    task=task, classes=classes or None, seed=0, n_jobs=1)),
    ]).fit(X, target)  # fmt: skip
    if calibrator:
        model = pipeline.named_steps["model"]
        p = model._blend(pipeline[:-1].transform(X))[:, 1]
        model.calibrator_ = fit_calibrator(calibrator, p, (target == classes[1]).astype(int))  # type: ignore[arg-type]
    save_bundle(directory, pipeline, meta)
    return load_bundle(directory)


def _binary_target() -> np.ndarray:
    table = _table(np.random.default_rng(1))
    signal = (table["tenure"].fillna(30) < 24) | (table["plan"] == "basic")
    return np.where(signal, "yes", "no")


GBMS = [("lightgbm", {"num_leaves": 7, "min_child_samples": 5}, 20),
        ("xgboost", {"max_depth": 3}, 20)]  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    root = tmp_path_factory.mktemp("fastpath")
    table = _table(np.random.default_rng(1))
    binary = _binary_target()
    multi = np.asarray(table["plan"].where(table["plan"] != "rare", "max"), dtype=object)
    value = (table["charges"].to_numpy() * 3 + np.nan_to_num(table["tenure"].to_numpy())).clip(1)
    return {
        "binary": _save(root / "b", "classification", GBMS, binary, ["no", "yes"]),
        "isotonic": _save(root / "i", "classification", GBMS[:1], binary, ["no", "yes"],
                          calibrator="isotonic", threshold=0.27),
        "sigmoid": _save(root / "s", "classification",
                         [("random_forest", {"n_estimators": 15, "max_features": 0.5,
                                             "min_samples_leaf": 3}, None)],
                         binary, ["no", "yes"], calibrator="sigmoid", threshold=0.61),
        "multiclass": _save(root / "m", "classification",
                            [GBMS[0], ("linear", {"C": 1.0}, None)], multi,
                            ["basic", "max", "pro"]),
        "regression": _save(root / "r", "regression",
                            [GBMS[1], ("extra_trees", {"n_estimators": 15, "max_features": 0.5,
                                                       "min_samples_leaf": 3}, None)],
                            value, [], log_target=True),
    }  # fmt: skip


def _requests() -> list[dict[str, Any]]:
    """Training-like rows, then the awkward ones: missing, unseen, extra, ids, tz, empty."""
    rows = _table(np.random.default_rng(7), 80).to_dict(orient="records")
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in rows]  # fmt: skip
    for i, row in enumerate(rows):
        row["customer_id"] = f"c-{i}"
        row["senior"] = bool(row["senior"])
    rows += [
        {"customer_id": "c-x1"},  # every input missing
        {"tenure": 3, "plan": "gold", "autopay": "YES", "note": "", "constant": 1},  # unseen
        {"tenure": 12.5, "charges": 99, "plan": None, "senior": None, "signup": None,
         "note": "call 415-555-0134 or mail bob@x.com, bill high", "email": "ME@Hotmail.COM"},
        {"tenure": True, "senior": True, "signup": "2024-02-29", "email": "none"},
    ]  # fmt: skip
    return rows


# Scored one at a time: in a batch, pandas takes the datetime format from the first value.
SINGLES = [
    {"senior": 1, "signup": "2024-02-29T23:30:00+02:00"},
    {"charges": float("nan"), "senior": 0.0, "autopay": "n", "signup": "2024-03-01 10:00"},
    {"signup": "2024-03-01T10:00:00.123456Z", "plan": 7, "email": 12.0},
    {"signup": "03/01/2024", "autopay": True},  # not ISO: pandas parses it
]


@pytest.mark.parametrize("name", ["binary", "isotonic", "sigmoid", "multiclass", "regression"])
def test_compiled_predictions_equal_the_bundles(bundles: dict[str, Bundle], name: str) -> None:
    bundle = bundles[name]
    fast = compile_bundle(bundle)
    rows = _requests()
    expected = bundle.predict(rows)
    batch = fast.predict_rows(rows)
    np.testing.assert_allclose(batch.scores, expected["score"].to_numpy(float), rtol=0, atol=1e-9)
    if bundle.meta.task == "classification":
        assert batch.labels == list(expected["label"])
    assert batch.ids is not None and batch.ids[0] == "c-0"
    # One row at a time, as the product route serves them: the same numbers.
    for row in [*rows[:2], *rows[-4:], *SINGLES]:
        single = fast.predict_rows([row]).scores[0]
        assert abs(single - bundle.predict([row])["score"].iloc[0]) <= 1e-9, row


def test_columns_in_numpy_score_like_rows(bundles: dict[str, Bundle]) -> None:
    fast = compile_bundle(bundles["binary"])
    rows = _requests()[:40]
    columns = {c: [r.get(c) for r in rows] for c in DTYPES}
    columns["tenure"] = np.asarray([np.nan if v is None else v for v in columns["tenure"]])
    assert np.array_equal(fast.predict_columns(columns, 40).scores, fast.predict_rows(rows).scores)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"tenure": "abc"}, "column 'tenure' is numeric; got 'abc'"),
        ({"senior": "maybe"}, "column 'senior' is boolean; got 'maybe'"),
        ({"signup": "not a date"}, "column 'signup' is datetime; got 'not a date'"),
        ({"plna": "basic", "tenure": 1}, "unknown input column 'plna' (the model expects: tenure,"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    bundles: dict[str, Bundle], row: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        compile_bundle(bundles["binary"]).predict_rows([row])
    assert message in str(raised.value)


def test_a_plain_sklearn_pipeline_is_left_to_the_bundle() -> None:
    from sklearn.linear_model import LogisticRegression

    pipeline = Pipeline([("clf", LogisticRegression())])
    meta = BundleMeta(task="classification", target="y", columns=[], classes=[0, 1])
    with pytest.raises(Unsupported):
        compile_bundle(Bundle(pipeline, meta))


# -- XGBoost members walk their trees in numpy, bit for bit as XGBoost predicts -------------------


def _xgboost_rows(n: int, seed: int, width: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width))
    X[:, 3] = np.round(X[:, 3] * 2)  # few distinct values: many rows sit on a split
    X[rng.random(X.shape) < 0.12] = np.nan
    return X


@pytest.mark.parametrize(
    ("task", "classes", "early"),
    [("classification", 2, False), ("classification", 2, True), ("classification", 4, False),
     ("regression", 0, False)],
    ids=["binary", "binary-early-stopped", "multiclass", "regression"],
)  # fmt: skip
def test_the_numpy_tree_walk_equals_xgboost_exactly(task: str, classes: int, early: bool) -> None:
    from aiml024.runtime.fastpath import WALK_ROWS, XGBoostTrees
    from aiml024.runtime.learners import get_learner

    def target(X: np.ndarray) -> np.ndarray:
        signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 3]) * np.nan_to_num(X[:, 1])
        noisy = signal + np.random.default_rng(len(X)).normal(0, 0.7, len(X))
        if task == "regression":
            return 10 + 3 * noisy
        return noisy > 0.3 if classes == 2 else np.digitize(noisy, [-1.0, 0.0, 1.0])

    learner = get_learner("xgboost")
    params = {"learning_rate": 0.1, "max_depth": 6, "colsample_bytree": 0.8, "subsample": 0.8}
    estimator = learner.make(params, 0, task, classes, 1, 400 if early else 60)
    X = _xgboost_rows(2000, 1)
    if early:
        X_val = _xgboost_rows(500, 2)
        learner.fit(estimator, X, target(X).astype(int), X_val, target(X_val).astype(int), 5)
    else:
        learner.fit(estimator, X, target(X) if task == "regression" else target(X).astype(int))
    booster = estimator.get_booster()
    booster.set_param({"nthread": 1})
    iterations = estimator._get_iteration_range(None)
    assert not early or 0 < iterations[1] < 400  # early stopping: only the kept rounds count

    def native(rows: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(rows, iteration_range=iterations, predict_type="value",
                                       missing=np.nan, validate_features=False)  # fmt: skip

    walker = XGBoostTrees.compile(booster, iterations, estimator.missing, native)
    assert walker is not None
    rows = _xgboost_rows(12_000, 3)
    rng = np.random.default_rng(4)
    at = rng.integers(0, int(walker.split.sum()), 6000)  # half the rows: one value on a split
    rows[np.arange(6000), walker.feature[walker.split][at] % 8] = walker.condition[walker.split][at]
    expected = native(rows)
    got = np.concatenate([walker(rows[i : i + WALK_ROWS]) for i in range(0, len(rows), WALK_ROWS)])
    assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)  # every bit: far inside 1e-9
    assert np.array_equal(walker(rows[:1]), expected[:1])


def test_xgboost_members_of_a_bundle_use_the_walk(
    bundles: dict[str, Bundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path's XGBoost member: the walk for small batches, XGBoost for large ones; the
    same numbers either way (the bundle-equality tests above cover both sizes)."""
    from aiml024.runtime import fastpath

    bundle = bundles["binary"]
    model = bundle.pipeline.named_steps["model"]
    booster = model.estimators_[1].estimator.get_booster()
    native = booster.inplace_predict
    compiled = fastpath.XGBoostTrees.compile(booster, (0, 0), np.nan, native)
    assert compiled is not None
    fast = compile_bundle(bundle)
    walks: list[int] = []
    walk = fastpath.XGBoostTrees.__call__
    monkeypatch.setattr(fastpath.XGBoostTrees, "__call__",
                        lambda self, X: walks.append(len(X)) or walk(self, X))  # fmt: skip
    rows = _requests()
    X = fast.features({c: [r.get(c) for r in rows] for c in DTYPES}, len(rows))
    proba = np.asarray(model.estimators_[1].estimator.predict_proba(X), dtype=float)
    assert np.array_equal(fast.members[1](X[:1]), proba[:1])
    assert np.array_equal(fast.members[1](X), proba)
    assert walks == [1] and len(rows) > fastpath.WALK_ROWS  # the batch went to XGBoost
