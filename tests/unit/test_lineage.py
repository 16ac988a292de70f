"""`aiml024 lineage model/NAME`: dataset -> transform -> trial -> model -> deployments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.test_verify import NAME, Registered, register_model
from typer.testing import CliRunner

from aiml024.api import parse_object
from aiml024.cli.main import app
from aiml024.local.store import Store

runner = CliRunner()


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    return register_model(tmp_path, monkeypatch)


def deploy(home: Path, name: str, spec: dict, status: dict | None = None) -> None:
    store = Store(home)
    store.apply({"apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
                 "metadata": {"name": name}, "spec": spec})  # fmt: skip
    if status is not None:
        store.update_status("Deployment", name, status)


def test_lineage_prints_the_chain_from_dataset_to_deployments(registered: Registered) -> None:
    status = registered.record["model"]["status"]
    digest, spec_hash = status["sha256"], status["lineage"]["specHash"]
    deploy(registered.home, "churn", {"model": NAME, "requireStage": "staging"},
           {"phase": "Serving", "endpoint": "http://127.0.0.1:9001", "traffic": {"stable": 100},
            "models": {"stable": digest}})  # fmt: skip
    deploy(registered.home, "churn-next",
           {"model": "churn-model-v0",
            "strategy": {"type": "canary", "canary": {"model": NAME, "weight": 10}}},
           {"phase": "Pending", "models": {"stable": "e" * 64}})  # fmt: skip
    deploy(registered.home, "other", {"model": "unrelated-v1"})

    result = runner.invoke(app, ["lineage", f"model/{NAME}"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"dataset     s3://data/churn.csv  fingerprint {'a' * 64}",
        f"-> transform spec sha256 {spec_hash}  code 0.1.0  "
        "(experiment churn, workflow churn-g1, seed 42)",
        "-> trial     #3  lightgbm, cross-validated 0.8000",
        f"-> model     {NAME}  sha256 {digest}  stage none  card signed",
        "-> deployment churn  stable 100%  Serving at http://127.0.0.1:9001, serving this digest",
        "-> deployment churn-next  canary 10%  Pending, not serving this digest (serves nothing)",
    ]


def test_lineage_json_is_the_same_graph(registered: Registered) -> None:
    status = registered.record["model"]["status"]
    deploy(registered.home, "churn", {"model": NAME, "strategy": {"type": "shadow",
                                                                 "shadow": {"model": NAME}}},
           {"phase": "Serving", "endpoint": "http://127.0.0.1:9001",
            "models": {"stable": status["sha256"], "shadow": status["sha256"]}})  # fmt: skip
    result = runner.invoke(app, ["lineage", f"model/{NAME}", "--json"])
    assert result.exit_code == 0, result.output
    graph = json.loads(result.stdout)
    assert graph["dataset"] == {"uri": "s3://data/churn.csv", "fingerprint": "a" * 64}
    assert graph["transform"] == {
        "specHash": status["lineage"]["specHash"],
        "codeVersion": "0.1.0",
        "experiment": "churn",
        "workflow": "churn-g1",
        "seed": 42,
    }
    assert graph["trial"] == {"number": 3, "learner": "lightgbm", "value": 0.8}
    assert graph["model"] == {
        "name": NAME,
        "namespace": "default",
        "sha256": status["sha256"],
        "artifactUri": status["artifactUri"],
        "stage": "none",
        "cardSignature": status["cardSignature"],
    }
    served = {"name": "churn", "phase": "Serving", "endpoint": "http://127.0.0.1:9001",
              "servedSha256": status["sha256"], "servesThisModel": True}  # fmt: skip
    assert graph["deployments"] == [
        {**served, "role": "stable", "weight": 100},
        {**served, "role": "shadow", "weight": None},
    ]


def test_a_model_registered_from_an_artifact_has_no_training_lineage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    model = parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "imported-v1"},
        "spec": {"source": {"artifactUri": "file:///models/imported", "sha256": "c" * 64},
                 "task": "classification"},
    })  # fmt: skip
    store.apply(model.wire())
    store.update_status(
        "Model", "imported-v1", {"artifactUri": "file:///models/imported", "sha256": "c" * 64}
    )
    result = runner.invoke(app, ["lineage", "model/imported-v1"], env={"AIML024_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "dataset     unknown: registered from the artifact file:///models/imported",
        f"-> model     imported-v1  sha256 {'c' * 64}  stage none",
        "-> deployment: none routes to this model",
    ]


def test_an_unknown_model_is_an_error(tmp_path: Path) -> None:
    env = {"AIML024_HOME": str(tmp_path / "home")}
    result = runner.invoke(app, ["lineage", "model/absent"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: models "absent" not found'
    result = runner.invoke(app, ["lineage", "experiment/churn"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: expected model/NAME, not 'experiment/churn'"
