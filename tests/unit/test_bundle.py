"""The model bundle: what a client sends in, what comes out, and its digest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from aiml024.runtime.bundle import BundleMeta, InputColumn, bundle_digest, load_bundle, save_bundle


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"usage": rng.normal(size=300), "plan": rng.choice(["a", "b", "c"], 300)})
    y = np.where(X["usage"] + (X["plan"] == "a") > 0.5, "gold", "iron")
    pipeline = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                                   remainder="passthrough")),
        ("model", LogisticRegression()),
    ]).fit(X, y)  # fmt: skip
    meta = BundleMeta(
        task="classification", target="tier", id_column="id",
        columns=[InputColumn(name="usage", dtype="numeric"), InputColumn(name="plan", dtype="categorical")],
        classes=["gold", "iron"], ignored_columns=["constant_col"],
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("bundle")
    return directory, save_bundle(directory, pipeline, meta)


def test_predicts_labels_and_probabilities_for_raw_rows(saved: tuple[Path, str]) -> None:
    bundle = load_bundle(saved[0])
    rows = [{"id": "x1", "usage": 3.0, "plan": "a"}, {"id": "x2", "usage": -3.0, "plan": "c"}]
    out = bundle.predict(rows)
    assert list(out["label"]) == ["gold", "iron"]
    proba = bundle.predict_proba(rows)
    assert list(proba.columns) == ["gold", "iron"]
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.allclose(out["score"], proba["iron"])  # the score is the second class's probability


def test_columns_validate_dropped_are_accepted_and_unknown_ones_refused(saved: tuple[Path, str]) -> None:
    bundle = load_bundle(saved[0])
    assert len(bundle.predict([{"usage": 1.0, "plan": "b", "constant_col": 7}])) == 1
    with pytest.raises(ValueError, match="unknown input columns: colour"):
        bundle.predict([{"usage": 1.0, "colour": "red"}])


def test_digest_is_recorded_and_moves_with_any_change(saved: tuple[Path, str]) -> None:
    directory, digest = saved
    assert bundle_digest(directory) == digest
    (directory / "bundle.json").write_text((directory / "bundle.json").read_text() + " ")
    assert bundle_digest(directory) != digest
