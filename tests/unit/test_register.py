"""Register copies the bundle and card into the artifact store and describes the Model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from tests.unit.test_search import ingest_result, validate_result

from aiml024.api import ExperimentSpec, Model
from aiml024.api.steps import EvaluateResult, LeaderboardRow, SearchResult
from aiml024.runtime.bundle import BundleMeta, InputColumn, save_bundle
from aiml024.runtime.steps import StepError
from aiml024.runtime.steps import register as register_step

UID = "5c1d0b7e-8f3a-4a1b-9c2d-0e4f6a8b1c3d"
SPEC = {
    "task": "classification",
    "data": {"uri": "s3://data/churn.csv"},
    "target": "churned",
    "model": {"name": "churn-model", "labels": {"team": "retention"}},
}


def artifacts(tmp: Path) -> tuple[Path, dict[str, Any]]:
    inputs = tmp / "in"
    model = DummyClassifier().fit(pd.DataFrame({"x": [0, 1]}), [0, 1])
    meta = BundleMeta(
        task="classification",
        target="churned",
        columns=[InputColumn(name="x", dtype="numeric")],
        classes=[0, 1],
    )
    digest = save_bundle(inputs / "bundle", model, meta)
    (inputs / "card").mkdir()
    (inputs / "card" / "model_card.md").write_text("# card\n")
    (inputs / "card" / "model_card.json").write_text("{}\n")
    leaderboard = [
        LeaderboardRow(rank=1, name="ensemble", learner="ensemble", value=0.9,
                       members=["lightgbm#3", "xgboost#1"], weights=[0.5, 0.5]),
        LeaderboardRow(rank=2, name="lightgbm", learner="lightgbm", value=0.8, trial=3,
                       params={"num_leaves": 8}),
    ]  # fmt: skip
    search = SearchResult.model_validate(
        {"trialsCompleted": 4, "trialsTotal": 4, "metric": "maximize_auc", "bestValue": 0.8,
         "bestTrial": {"number": 3, "learner": "lightgbm", "value": 0.8},
         "leaderboard": leaderboard, "elapsedSeconds": 1.0, "trainRows": 2, "holdoutRows": 1}
    )  # fmt: skip
    evaluate = EvaluateResult(
        metrics={"auc": 0.9},
        baseline_metrics={"auc": 0.8},
        primary_metric="auc",
        sha256=digest,
        learner="ensemble",
        members=["lightgbm#3", "xgboost#1"],
        weights=[0.5, 0.5],
        calibration={"brier": 0.1, "ece": 0.02},
        card_complete=True,
        trial=3,
        holdout_rows=1,
    )
    types = {"x": "numeric", "email": "categorical", "churned": "categorical"}
    params = {
        "experiment": "churn",
        "namespace": "ml",
        "experimentUid": UID,
        "workflow": "churn-g1",
        "artifactStore": "",
        "studyStorage": "",
        "codeVersion": "0.1.0",
        "spec": SPEC,
        "ingest": ingest_result(2, types, uri="s3://data/churn.csv", fingerprint="a" * 64),
        "validate": validate_result(2, types, pii={"email": "email"}, piiAction="mask"),
        "search": search.wire(),
        "evaluate": evaluate.wire(),
    }
    return inputs, params


@pytest.mark.parametrize("store", ["memory", "local"])
def test_register_copies_the_bundle_and_verifies_its_digest(tmp_path: Path, store: str) -> None:
    inputs, params = artifacts(tmp_path)
    local = str(tmp_path / "store")
    params["artifactStore"] = local if store == "local" else f"memory://{tmp_path.name}"
    result = register_step.run(params, inputs, tmp_path / "out")
    uri = result["artifactUri"]
    assert uri.endswith(f"/ml/churn/{UID}/churn-g1/bundle")
    fs, root = fsspec.core.url_to_fs(uri)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(root)) == ["bundle.json", "model.joblib"]
    assert register_step.remote_digest(fs, root) == params["evaluate"]["sha256"]
    card_fs, card = fsspec.core.url_to_fs(result["modelCardUri"])
    assert card_fs.cat_file(card) == b"# card\n"
    # The control planes read the registration from the store, next to the bundle.
    record_fs, record = fsspec.core.url_to_fs(uri.removesuffix("/bundle") + "/registration.json")
    assert json.loads(record_fs.cat_file(record)) == result
    # Registering again (a retried step) writes the same bytes and succeeds.
    assert register_step.run(params, inputs, tmp_path / "out") == result


def test_a_registered_bundle_is_never_replaced(tmp_path: Path) -> None:
    """Another run that resolves to the same path (it cannot, with the uid in it, but a
    misconfigured store might) fails instead of overwriting what a Model names."""
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    first = register_step.run(params, inputs, tmp_path / "out")
    bundle = Path(first["artifactUri"])
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    other_inputs, other = artifacts(tmp_path / "other")
    (other_inputs / "bundle" / "bundle.json").write_text("{}")
    other["evaluate"]["sha256"] = register_step.bundle_digest(other_inputs / "bundle")
    other["artifactStore"] = params["artifactStore"]
    with pytest.raises(StepError, match="already holds other content"):
        register_step.run(other, other_inputs, tmp_path / "out2")
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


def test_two_namespaces_and_a_recreated_experiment_get_their_own_paths(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    uris = set()
    for namespace, uid in (("ml", UID), ("risk", UID), ("ml", "another-uid")):
        run = {**params, "namespace": namespace, "experimentUid": uid}
        uris.add(register_step.run(run, inputs, tmp_path / "out")["artifactUri"])
    assert len(uris) == 3


def test_a_run_without_its_identity_is_refused(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    del params["experimentUid"]
    with pytest.raises(StepError, match="'experimentUid'"):
        register_step.run(params, inputs, tmp_path / "out")


def test_register_describes_the_model_version(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}/"
    manifest = register_step.run(params, inputs, tmp_path / "out")["model"]
    model = Model.model_validate(manifest)
    assert model.metadata.name == "churn-model"
    assert model.metadata.labels == {"team": "retention", "aiml024.io/experiment": "churn"}
    assert model.spec.source.experiment == "churn" and model.spec.source.trial == 3
    assert model.spec.stage == "staging" and model.spec.task == "classification"
    status = model.status
    assert status.artifact_uri == f"memory://{tmp_path.name}/ml/churn/{UID}/churn-g1/bundle"
    assert status.sha256 == params["evaluate"]["sha256"]
    assert status.metrics == {"auc": 0.9} and status.baseline_metrics == {"auc": 0.8}
    assert status.evidence.model_card_complete and status.evidence.pii_columns == ["email"]
    assert status.evidence.model_card_uri.endswith("/card/model_card.md")
    assert status.evidence.calibration == {"brier": 0.1, "ece": 0.02}
    assert [e.name for e in status.leaderboard] == ["ensemble", "lightgbm"]
    lineage = status.lineage
    assert lineage.dataset_fingerprint == "a" * 64 and lineage.seed == 42
    # The hash covers the spec's canonical wire form, as the compiler passes it to the workflow.
    wire = ExperimentSpec.model_validate(SPEC).wire()
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    assert lineage.spec_hash == hashlib.sha256(canonical).hexdigest()


def test_a_changed_bundle_is_refused(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    (inputs / "bundle" / "extra.txt").write_text("tampered")
    with pytest.raises(StepError, match="does not match"):
        register_step.run(params, inputs, tmp_path / "out")


def test_model_name_defaults_to_the_experiment(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    params["spec"] = {k: v for k, v in SPEC.items() if k != "model"}
    manifest = register_step.run(params, inputs, tmp_path / "out")["model"]
    assert manifest["metadata"]["name"] == "churn-model"
    assert manifest["metadata"]["labels"] == {"aiml024.io/experiment": "churn"}


def test_a_renamed_result_field_exits_2_naming_it(tmp_path: Path) -> None:
    """evaluate's result with `sha256` renamed: `python -m aiml024.runtime register` refuses
    its params on one error line naming both keys, and writes nothing to the store."""
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    params["evaluate"]["digest"] = params["evaluate"].pop("sha256")
    done = subprocess.run(
        [sys.executable, "-m", "aiml024.runtime", "register", "--params", json.dumps(params),
         "--inputs", str(inputs), "--outputs", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: invalid params: 'evaluate.sha256' is missing; "
        "'evaluate.digest' is not a known key (renamed?)"
    ]
    assert not (tmp_path / "store").exists()


def test_unscanned_data_is_recorded_as_unscanned_evidence(tmp_path: Path) -> None:
    """With spec.pii.scan off the Model's evidence says so (not "no PII"): the promotion
    policy's pii_unscanned rule keeps it from production."""
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    params["validate"] = {**params["validate"], "pii": {}, "piiAction": "unscanned"}
    evidence = register_step.run(params, inputs, tmp_path / "out")["model"]["status"]["evidence"]
    assert evidence["piiColumns"] == [] and evidence["piiAction"] == "unscanned"
