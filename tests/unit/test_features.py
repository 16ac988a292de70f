"""The Featurizer turns typed columns into one dense, stable, leak-free float matrix."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from aiml024.runtime.features import Featurizer

TYPES = {
    "customer_id": "id",
    "tenure": "numeric",
    "plan": "categorical",
    "last_active": "datetime",
    "note": "text",
    "senior": "boolean",
}
WORDS = ["cancel my plan now", "great service thanks", "price too high", "slow internet again"]


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "tenure": rng.integers(1, 60, n).astype(float),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "last_active": pd.Timestamp("2025-06-30")
            - pd.to_timedelta(rng.integers(0, 90, n), "D"),
            "note": rng.choice(WORDS, n),
            "senior": rng.random(n) < 0.3,
        }
    )


@pytest.fixture
def fitted() -> Featurizer:
    return Featurizer(types=TYPES, datetime_parts=["month", "dayofweek"]).fit(frame())


def column(featurizer: Featurizer, X: np.ndarray, name: str) -> np.ndarray:
    return X[:, list(featurizer.get_feature_names_out()).index(name)]


def test_names_are_stable_and_ids_are_dropped(fitted: Featurizer) -> None:
    names = list(fitted.get_feature_names_out())
    assert "customer_id" not in names
    assert names[:2] == ["tenure", "plan"]
    assert "last_active__days_since" in names and "last_active__month" in names
    assert any(n.startswith("note__svd") for n in names)
    assert fitted.transform(frame(10, seed=1)).shape == (10, len(names))


def test_unseen_and_missing_categories_read_as_missing(fitted: Featurizer) -> None:
    rows = pd.DataFrame({"plan": ["basic", "enterprise", None]})
    codes = column(fitted, fitted.transform(rows), "plan")
    assert np.isfinite(codes[0])
    assert np.isnan(codes[1]) and np.isnan(codes[2])


def test_missing_columns_at_transform_time_become_missing_values(fitted: Featurizer) -> None:
    X = fitted.transform(pd.DataFrame({"tenure": [3.0, None]}))
    assert column(fitted, X, "tenure")[0] == 3.0
    assert np.isnan(column(fitted, X, "tenure")[1])
    assert np.isnan(column(fitted, X, "last_active__days_since")).all()


def test_datetime_gives_parts_and_recency_from_the_training_reference(fitted: Featurizer) -> None:
    rows = pd.DataFrame({"last_active": ["2025-06-30", "2025-06-20T00:00:00Z", "not a date"]})
    X = fitted.transform(rows)
    since = column(fitted, X, "last_active__days_since")
    assert since[0] == pytest.approx(0.0) and since[1] == pytest.approx(10.0)
    assert np.isnan(since[2])
    assert column(fitted, X, "last_active__month")[0] == 6


def test_text_becomes_dense_reduced_columns(fitted: Featurizer) -> None:
    X = fitted.transform(pd.DataFrame({"note": ["cancel my plan", None, "never seen words"]}))
    svd = [i for i, n in enumerate(fitted.get_feature_names_out()) if n.startswith("note__svd")]
    assert 1 <= len(svd) <= 24
    assert np.isfinite(X[:, svd]).all()


def test_booleans_read_alike_from_bools_strings_and_numbers(fitted: Featurizer) -> None:
    rows = pd.DataFrame({"senior": pd.Series([True, "yes", 1.0, "False", 0, None], dtype=object)})
    values = column(fitted, fitted.transform(rows), "senior")
    np.testing.assert_array_equal(values[:5], [1, 1, 1, 0, 0])
    assert np.isnan(values[5])


def test_fit_is_deterministic_and_survives_pickling() -> None:
    first = Featurizer(types=TYPES).fit(frame())
    second = Featurizer(types=TYPES).fit(frame())
    probe = frame(30, seed=2)
    np.testing.assert_array_equal(first.transform(probe), second.transform(probe))
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.transform(probe), first.transform(probe))


def test_the_same_fit_pickles_the_same_bytes_in_any_process() -> None:
    """A bundle's digest names its bytes: no memory address may reach the pickle (scikit-learn
    caches id(stop_words) on every transform), so a rerun with the same seed gives the same
    digest, in this process or another."""
    blobs = []
    for _ in range(2):
        featurizer = Featurizer(types=TYPES).fit(frame())
        featurizer.transform(frame(30, seed=2))  # sets the cache again
        blobs.append(pickle.dumps(featurizer))
    assert b"_stop_words_id" not in blobs[0]
    assert blobs[0] == blobs[1]


def test_drop_columns_are_ignored() -> None:
    featurizer = Featurizer(types=TYPES, drop_columns=["plan"]).fit(frame())
    assert "plan" not in featurizer.get_feature_names_out()
