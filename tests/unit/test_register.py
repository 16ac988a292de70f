"""Register copies the bundle and card into the artifact store and describes the Model."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from tests.unit.test_search import ingest_result, validate_result

from aiml024 import signing
from aiml024.api import Experiment, ExperimentSpec, Model, SpecError
from aiml024.api.steps import EvaluateResult, LeaderboardRow, SearchResult
from aiml024.reconcile import experiment as experiment_rules
from aiml024.runtime.bundle import BundleMeta, InputColumn, save_bundle
from aiml024.runtime.card import (
    CARD_DOMAIN,
    SignedCard,
    build_card,
    key_fingerprint,
    signature_valid,
)
from aiml024.runtime.steps import StepError
from aiml024.runtime.steps import register as register_step

UID = "5c1d0b7e-8f3a-4a1b-9c2d-0e4f6a8b1c3d"
SPEC = {
    "task": "classification",
    "data": {"uri": "s3://data/churn.csv"},
    "target": "churned",
    "model": {"name": "churn-model", "labels": {"team": "retention"}},
}


CARD = build_card(
    name="churn-model",
    task="classification",
    target="churned",
    owner="retention",
    data={"uri": "s3://data/churn.csv", "rows": 2, "fingerprint": "a" * 64},
    training={"objective": "maximize_auc", "trials": "4 of 4", "learners": ["lightgbm"]},
    leaderboard=[{"rank": 1, "name": "ensemble", "value": 0.9}],
    evaluation={
        "metrics": {"auc": 0.9},
        "baselineMetrics": {"auc": 0.8},
        "primaryMetric": "auc",
        "calibration": {"brier": 0.1, "ece": 0.02},
        "fairness": {"figures": {"sex.demographic_parity_difference": 0.125}, "groups": {}},
    },
    pii={"columns": {"email": "email"}, "action": "mask"},
    limitations=["Trained on 2 rows."],
)


@pytest.fixture(autouse=True)
def card_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The card signing key every test here registers with (as a Secret would provide it)."""
    path = tmp_path_factory.mktemp("secret") / "card-key.pem"
    signing.save_private_key(signing.generate_key(), path)
    monkeypatch.setenv("AIML024_CARD_KEY_FILE", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("AIML024_HOME", raising=False)
    return path


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
    (inputs / "card" / "model_card.json").write_text(json.dumps(CARD, indent=1) + "\n")
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
    # The published card is rendered from evaluate's JSON, with the run's lineage added.
    markdown = card_fs.cat_file(card).decode()
    assert markdown.startswith("# Model card: churn-model\n")
    assert f"- Bundle (sha256): {params['evaluate']['sha256']}" in markdown
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


# --- the published, signed card -------------------------------------------------------------------


def read(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.cat_file(path)


def test_the_card_is_published_as_json_markdown_and_html_with_its_lineage(tmp_path: Path) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    result = register_step.run(params, inputs, tmp_path / "out")
    card_dir = Path(result["modelCardUri"]).parent
    assert sorted(p.name for p in card_dir.iterdir()) == [
        "model_card.html", "model_card.json", "model_card.md", "signature.json",
    ]  # fmt: skip
    card = json.loads((card_dir / "model_card.json").read_text())
    assert card["lineage"] == {
        "datasetUri": "s3://data/churn.csv",
        "datasetFingerprint": "a" * 64,
        "specHash": result["model"]["status"]["lineage"]["specHash"],
        "codeVersion": "0.1.0",
        "experiment": "churn",
        "workflow": "churn-g1",
        "seed": 42,
        "trial": 3,
        "model": "churn-model",
        "sha256": params["evaluate"]["sha256"],
    }
    assert card["evaluation"] == CARD["evaluation"]  # evaluate's facts are kept as they were
    page = (card_dir / "model_card.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Model card: churn-model</title>" in page
    for heading in ("Intended use", "Data", "Holdout evaluation", "Calibration", "Fairness",
                    "Limitations", "Lineage"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page
    assert '<code>sex.demographic_parity_difference</code></td><td class="num">0.1250' in page
    # Self-contained: nothing is fetched from anywhere (no CDN script, stylesheet or font).
    assert "<link" not in page and " src=" not in page and "@import" not in page
    embedded = page.split('<script type="application/json" id="model-card">')[1]
    assert json.loads(embedded.split("</script>")[0]) == card


def test_register_signs_the_card_files_the_bundle_the_model_and_the_run(
    tmp_path: Path, card_key: Path
) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    result = register_step.run(params, inputs, tmp_path / "out")
    key = signing.load_private_key(card_key)
    recorded = result["model"]["status"]["cardSignature"]
    card_uri = result["modelCardUri"].rsplit("/", 1)[0]
    assert recorded == {
        "keyFingerprint": hashlib.sha256(signing.public_key_bytes(key.public_key())).hexdigest(),
        "signatureUri": f"{card_uri}/signature.json",
    }
    signed = SignedCard.model_validate_json(read(recorded["signatureUri"]))
    assert signed.key_fingerprint == recorded["keyFingerprint"] == key_fingerprint(key)
    assert signed.statement.wire() == {
        "model": "churn-model",
        "run": {"namespace": "ml", "experiment": "churn", "experimentUid": UID,
                "workflow": "churn-g1"},
        "bundleSha256": params["evaluate"]["sha256"],
        "card": {name: hashlib.sha256(read(f"{card_uri}/{name}")).hexdigest()
                 for name in ("model_card.html", "model_card.json", "model_card.md")},
    }  # fmt: skip
    assert signature_valid(signed, key.public_key())
    # The signed bytes: the domain line, then the statement as canonical JSON.
    canonical = json.dumps(signed.statement.wire(), sort_keys=True, separators=(",", ":"))
    key.public_key().verify(
        base64.b64decode(signed.signature), f"{CARD_DOMAIN}\n{canonical}".encode()
    )
    # Any other statement, or another key, does not verify.
    forged = signed.model_copy(deep=True)
    forged.statement.bundle_sha256 = "0" * 64
    assert not signature_valid(forged, key.public_key())
    assert not signature_valid(signed, signing.generate_key().public_key())


def test_the_registered_model_carries_the_card_signature_only_from_its_own_run(
    tmp_path: Path,
) -> None:
    inputs, params = artifacts(tmp_path)
    store = f"memory://{tmp_path.name}"
    params["artifactStore"] = store
    record = register_step.run(params, inputs, tmp_path / "out")
    exp = Experiment.model_validate({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "churn", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": SPEC,
    })  # fmt: skip
    registered = experiment_rules.model_to_register(exp, record, store, "churn-g1")
    assert registered.metadata.name == "churn-model-v1"
    assert registered.status is not None and registered.status.card_signature is not None
    assert registered.status.card_signature.wire() == record["model"]["status"]["cardSignature"]
    forged = json.loads(json.dumps(record))
    forged["model"]["status"]["cardSignature"]["signatureUri"] = f"{store}/elsewhere/sig.json"
    with pytest.raises(SpecError, match="cardSignature.signatureUri .* is not under this run"):
        experiment_rules.model_to_register(exp, forged, store, "churn-g1")


def test_without_a_key_in_a_cluster_registration_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A StepError: the dispatcher exits 2 with this one `error:` line."""
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    monkeypatch.delenv("AIML024_CARD_KEY_FILE")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(StepError) as raised:
        register_step.run(params, inputs, tmp_path / "out")
    assert str(raised.value) == (
        "cannot sign the model card: AIML024_CARD_KEY_FILE is not set and this runs in a "
        "Kubernetes pod, where no local key is made; set it to an Ed25519 private key file "
        "(PEM; in a cluster, the Secret mounted into the register step). A model is never "
        "registered with an unsigned card"
    )
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "keys").exists()  # no key is made up in a pod


def test_a_remote_store_without_a_key_fails_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    monkeypatch.delenv("AIML024_CARD_KEY_FILE")
    with pytest.raises(StepError, match="AIML024_CARD_KEY_FILE is not set and the artifact store"):
        register_step.run(params, inputs, tmp_path / "out")
    fs, root = fsspec.core.url_to_fs(params["artifactStore"])
    assert not fs.exists(root)


def test_a_configured_key_file_that_is_missing_or_not_a_key_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = str(tmp_path / "store")
    monkeypatch.setenv("AIML024_CARD_KEY_FILE", str(tmp_path / "absent.pem"))
    with pytest.raises(StepError, match=r"\(AIML024_CARD_KEY_FILE\): key file .*absent.pem does"):
        register_step.run(params, inputs, tmp_path / "out")
    (tmp_path / "junk.pem").write_text("not a key")
    monkeypatch.setenv("AIML024_CARD_KEY_FILE", str(tmp_path / "junk.pem"))
    with pytest.raises(StepError, match="is not a PEM private key"):
        register_step.run(params, inputs, tmp_path / "out")
    assert not (tmp_path / "store").exists()


def test_locally_the_key_is_made_once_under_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the local control plane runs it: the store is <state dir>/artifacts, the key
    <state dir>/keys/model-card.pem, created on first use (0600 in a 0700 directory)."""
    inputs, params = artifacts(tmp_path)
    home = tmp_path / "home"
    params["artifactStore"] = (home / "artifacts").as_uri()
    monkeypatch.delenv("AIML024_CARD_KEY_FILE")
    first = register_step.run(params, inputs, tmp_path / "out")
    key_file = home / "keys" / "model-card.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    fingerprint = key_fingerprint(signing.load_private_key(key_file))
    assert first["model"]["status"]["cardSignature"]["keyFingerprint"] == fingerprint
    # The next registration signs with the same key; the file is not replaced.
    before = key_file.read_bytes()
    second = register_step.run({**params, "experimentUid": "uid-2"}, inputs, tmp_path / "out")
    assert second["model"]["status"]["cardSignature"]["keyFingerprint"] == fingerprint
    assert key_file.read_bytes() == before
    # A key that others may read is refused, as ssh does.
    key_file.chmod(0o644)
    with pytest.raises(StepError, match="readable by others"):
        register_step.run({**params, "experimentUid": "uid-3"}, inputs, tmp_path / "out")


def test_aiml024_home_is_the_state_directory_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs, params = artifacts(tmp_path)
    params["artifactStore"] = f"memory://{tmp_path.name}"
    monkeypatch.delenv("AIML024_CARD_KEY_FILE")
    monkeypatch.setenv("AIML024_HOME", str(tmp_path / "state"))
    result = register_step.run(params, inputs, tmp_path / "out")
    key = signing.load_private_key(tmp_path / "state" / "keys" / "model-card.pem")
    assert result["model"]["status"]["cardSignature"]["keyFingerprint"] == key_fingerprint(key)
