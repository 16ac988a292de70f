"""Bad manifests get one clear error that names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.conftest import EXAMPLES

from aiml024.api import Experiment, SpecError, kind_for, parse_object
from aiml024.local.manifests import load_manifests


def churn() -> dict:
    return yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())


def problems_of(document: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_object(document, "experiment.yaml")
    return str(caught.value)


def test_examples_parse_with_defaults() -> None:
    objects = load_manifests(EXAMPLES / "churn")
    kinds = sorted(o.kind for o in objects)
    assert kinds == ["Deployment", "Experiment"]
    exp = next(o for o in objects if isinstance(o, Experiment))
    assert exp.spec.effective_objective == "maximize_auc"
    assert exp.spec.search.early_stopping.enabled


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["spec", "search", "colour"], "blue", "experiment.yaml: spec.search.colour: unknown field"),
        (["spec", "search", "trials"], "many", "spec.search.trials: Input should be a valid integer"),
        (["spec", "search", "timeBudgetSeconds"], 0, "spec.search.timeBudgetSeconds: Input should be greater than or equal to 1"),
        (["spec", "task"], "clustering", "spec.task: Input should be 'classification'"),
        (["spec", "objective"], "minimize_rmse", "objective minimize_rmse does not apply to classification"),
        (["metadata", "name"], "Churn_Model", "metadata.name: 'Churn_Model' is not a valid name"),
        (["spec", "data"], {"uri": "a.csv", "sql": {"urlSecret": {"name": "db", "key": "url"}, "query": "select 1"}},
         "spec.data: set exactly one of data.uri and data.sql"),
        (["spec", "resources", "tolerations"], [{"effect": "Sometimes"}], "spec.resources.tolerations[0].effect"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named(path: list[str], value: object, expected: str) -> None:
    document = churn()
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert expected in problems_of(document)


def test_missing_required_fields_are_listed_together() -> None:
    document = churn()
    del document["spec"]["target"]
    del document["spec"]["task"]
    message = problems_of(document)
    assert "spec.target: Field required" in message and "spec.task: Field required" in message


def test_wrong_api_version_and_kind() -> None:
    assert "apiVersion: expected aiml024.io/v1alpha1" in problems_of(
        {**churn(), "apiVersion": "v1"}
    )
    assert "kind: expected one of Experiment, Model, Deployment" in problems_of(
        {**churn(), "kind": "Job"}
    )


def test_load_reports_every_bad_file_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: aiml024.io/v1alpha1\nkind: Experiment\nmetadata: {name: a}\nspec: {}\n"
    )
    (tmp_path / "b.yaml").write_text("key: [unclosed\n")
    with pytest.raises(SpecError) as caught:
        load_manifests(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'a.yaml'}: spec.task: Field required" in message
    assert f"{tmp_path / 'b.yaml'}: not valid YAML" in message


def test_load_refuses_missing_paths_empty_dirs_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file or directory"):
        load_manifests(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="no manifests"):
        load_manifests(tmp_path)
    text = (EXAMPLES / "churn" / "deployment.yaml").read_text()
    (tmp_path / "twice.yaml").write_text(text + "\n---\n" + text)
    with pytest.raises(SpecError, match="Deployment/churn is defined more than once"):
        load_manifests(tmp_path)


def test_relative_data_paths_resolve_against_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(churn()))
    [exp] = load_manifests(tmp_path / "exp.yaml", resolve_paths=True)
    assert isinstance(exp, Experiment)
    assert exp.spec.data.uri == (tmp_path / "data" / "churn.csv.gz").as_uri()
    [raw] = load_manifests(tmp_path / "exp.yaml")
    assert isinstance(raw, Experiment) and raw.spec.data.uri == "data/churn.csv.gz"


def test_kinds_resolve_like_kubectl() -> None:
    assert {kind_for(k) for k in ("experiments", "exp", "Experiment", "experiment")} == {
        "Experiment"
    }
    assert kind_for("mdep") == "Deployment"
    with pytest.raises(SpecError, match="unknown kind 'pods'"):
        kind_for("pods")


def test_a_cost_matrix_needs_classification() -> None:
    """Refused when applied, not after training: a regression has no decision threshold."""
    document = churn()
    document["spec"] |= {"task": "regression", "target": "tenure_months",
                         "objective": "minimize_rmse",
                         "costMatrix": {"falsePositive": 1, "falseNegative": 5}}  # fmt: skip
    assert "costMatrix applies to binary classification, not regression" in problems_of(document)
