"""`aiml024 policy test` (the Rego unit tests, as `opa test` runs them) and `aiml024 policy
eval` (the promotion decision for a Model, from a file or the local store)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aiml024.api.model import Approval, Model
from aiml024.cli.policy import app
from aiml024.local.store import Store
from aiml024.policy import RESULT_QUERY, RegorusEngine, load_bundle, policy_input
from aiml024.policy.engine import rego_tests

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHA = "ab" * 32
WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the product's policies that a test may change."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


@pytest.fixture(autouse=True)
def _no_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AIML024_APPROVERS_FILE", raising=False)
    monkeypatch.delenv("AIML024_POLICY_DIR", raising=False)
    monkeypatch.setenv("AIML024_HOME", str(tmp_path / "home"))


# --- aiml024 policy test ---------------------------------------------------------------------


def test_every_rego_test_of_the_product_passes() -> None:
    result = runner.invoke(app, ["test", str(POLICIES)])
    assert result.exit_code == 0, result.output
    total = len(rego_tests(POLICIES))
    assert total >= 80
    lines = result.stdout.splitlines()
    assert lines[-1] == f"PASS: {total}/{total}"
    assert "data.aiml024.promotion.test_demographic_parity_above_threshold: PASS" in lines
    assert "data.aiml024.promotion.test_calibration_missing: PASS" in lines
    assert "data.aiml024.deployment.test_production_models_serve_in_production: PASS" in lines
    assert sum(1 for line in lines if line.endswith(": PASS")) == total
    assert "FAIL" not in result.output and result.stderr == ""


def test_the_default_directory_is_the_product_policies() -> None:
    result = runner.invoke(app, ["test"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("PASS: ")


def test_a_broken_test_fails_and_is_named(policy_dir: Path) -> None:
    tests = policy_dir / "promotion_test.rego"
    text = tests.read_text()
    expected = "sex.demographic_parity_difference 0.23 > 0.10"
    assert expected in text
    tests.write_text(text.replace(expected, "sex.demographic_parity_difference 0.23 > 0.20"))
    result = runner.invoke(app, ["test", str(policy_dir)])
    assert result.exit_code == 1
    total = len(rego_tests(POLICIES))
    lines = result.stdout.splitlines()
    assert "data.aiml024.promotion.test_demographic_parity_above_threshold: FAIL" in lines
    assert [line for line in lines if "FAIL" in line] == [
        "data.aiml024.promotion.test_demographic_parity_above_threshold: FAIL",
        f"FAIL: 1/{total}",
    ]
    assert f"PASS: {total - 1}/{total}" in lines


def test_a_test_that_errs_is_reported_with_its_prints(policy_dir: Path) -> None:
    (policy_dir / "extra_test.rego").write_text(
        "package aiml024.extra\n\n"
        "import rego.v1\n\n"
        "zero := 0\n\n"
        "test_ok if true\n\n"
        'test_divides if {\n\tprint("dividing by", zero)\n\t1 / zero == 1\n}\n\n'
        'test_undefined if {\n\tprint("looking up [bold]nothing")\n\tinput.nothing == 1\n}\n'
    )
    result = runner.invoke(app, ["test", str(policy_dir), "--run", r"\.extra\."])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "data.aiml024.extra.test_ok: PASS",
        "data.aiml024.extra.test_divides: ERROR (extra_test.rego:11:7: divide by zero)",
        "  extra_test.rego:10: dividing by 0",
        "data.aiml024.extra.test_undefined: FAIL",
        "  extra_test.rego:15: looking up [bold]nothing",
        "-" * 80,
        "PASS: 1/3",
        "FAIL: 1/3",
        "ERROR: 1/3",
    ]


def test_a_test_module_that_does_not_compile_fails(policy_dir: Path) -> None:
    (policy_dir / "broken_test.rego").write_text("package aiml024.broken\n\ntest_x if {\n")
    result = runner.invoke(app, ["test", str(policy_dir)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: broken_test.rego:4:1: expecting expression"


def test_a_policy_module_that_does_not_compile_fails(policy_dir: Path) -> None:
    policy = policy_dir / "promotion.rego"
    policy.write_text(policy.read_text() + "\nbroken if {\n")
    result = runner.invoke(app, ["test", "--dir", str(policy_dir)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: promotion.rego:")


def test_tests_run_before_the_pin_and_the_drift_is_reported(policy_dir: Path) -> None:
    policy = policy_dir / "promotion.rego"
    policy.write_text(policy.read_text() + "\n# a reviewed change, not pinned yet\n")
    result = runner.invoke(app, ["test", str(policy_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("PASS: ")
    assert "warning: the gates deny with this directory until it is pinned" in result.stderr
    assert "promotion.rego changed" in result.stderr


def test_run_selects_tests_by_rule_path() -> None:
    result = runner.invoke(app, ["test", str(POLICIES), "-r", "promotion.test_calibration_"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:-2] == [
        "data.aiml024.promotion.test_calibration_missing: PASS",
        "data.aiml024.promotion.test_calibration_missing_without_any_figure: PASS",
        "data.aiml024.promotion.test_calibration_ece_above_threshold: PASS",
        "data.aiml024.promotion.test_calibration_ece_at_the_threshold_is_allowed: PASS",
    ]
    none = runner.invoke(app, ["test", str(POLICIES), "--run", "no_such_test"])
    assert none.exit_code == 1
    assert "no tests matching --run 'no_such_test'" in none.stderr


def test_a_directory_without_tests_fails(policy_dir: Path) -> None:
    for test_file in policy_dir.glob("*_test.rego"):
        test_file.unlink()
    result = runner.invoke(app, ["test", str(policy_dir)])
    assert result.exit_code == 1
    assert "no tests in" in result.stderr


def test_two_different_directories_are_refused(policy_dir: Path) -> None:
    result = runner.invoke(app, ["test", str(policy_dir), "--dir", str(POLICIES)])
    assert result.exit_code == 2
    assert "two directories given" in result.output


# --- aiml024 policy eval ---------------------------------------------------------------------


def manifest(**evidence: Any) -> dict[str, Any]:
    """A registered classification Model in production that passes every rule."""
    return {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "churn-v3"},
        "spec": {
            "source": {"experiment": "churn"},
            "task": "classification",
            "stage": "production",
            "owner": "alice",
        },
        "status": {
            "artifactUri": "s3://aiml024-artifacts/churn/bundle",
            "sha256": SHA,
            "primaryMetric": "auc",
            "metrics": {"auc": 0.84},
            "baselineMetrics": {"auc": 0.78},
            "evidence": {
                "modelCardUri": "s3://aiml024-artifacts/churn/model_card.md",
                "modelCardComplete": True,
                "sensitiveAttributes": ["sex"],
                "fairness": {
                    "sex.demographic_parity_difference": 0.04,
                    "sex.equalized_odds_difference": 0.06,
                },
                "calibration": {"ece": 0.02, "brier": 0.1},
                **evidence,
            },
            "lineage": {
                "datasetUri": "s3://data/churn.parquet",
                "datasetFingerprint": "fp-1",
                "specHash": "spec-1",
                "codeVersion": "0.1.0",
            },
        },
    }


def approved(doc: dict[str, Any], *records: tuple[str, str]) -> dict[str, Any]:
    """`doc` with approval records (user, artifact digest) for production, as `approve` writes."""
    entries = [
        {"user": user, "stage": "production", "at": "2024-05-01T10:00:00Z", "sha256": sha}
        for user, sha in records
    ]
    doc["metadata"]["annotations"] = {"aiml024.io/approvals": json.dumps(entries)}
    return doc


def write(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def evaluate_cli(*args: str) -> Any:
    return runner.invoke(app, ["eval", *args, "--dir", str(POLICIES)])


def test_eval_of_a_file_denies_with_every_violation_and_exits_1(tmp_path: Path) -> None:
    unfair = manifest(
        fairness={"sex.demographic_parity_difference": 0.23},
        calibration={"ece": 0.08},
    )
    result = evaluate_cli("--file", str(write(tmp_path, unfair)))
    assert result.exit_code == 1
    digest = json.loads((POLICIES / "policy-pin.json").read_text())["bundleDigest"]
    assert result.stdout.splitlines() == [
        f"model churn-v3 to production: deny (policy {digest})",
        "  calibration_ece: expected calibration error 0.08 > 0.05",
        "  fairness_demographic_parity: sex.demographic_parity_difference 0.23 > 0.10",
        "  fairness_missing: evidence.fairness has no sex.equalized_odds_difference; every "
        "sensitive attribute needs its demographic parity and equalized odds differences",
    ]


def test_eval_without_approvals_requires_approval_and_exits_3(tmp_path: Path) -> None:
    path = write(tmp_path, approved(manifest(), ("bob", SHA)))
    result = evaluate_cli("-f", str(path))
    assert result.exit_code == 3
    assert "to production: require_approval" in result.stdout
    assert (
        "  approval_required: promotion to production needs an approval from someone other "
        "than the owner alice (approved so far by: nobody)"
    ) in result.stdout.splitlines()


def test_eval_with_approvals_counts_them_as_the_control_planes_do(tmp_path: Path) -> None:
    path = write(tmp_path, approved(manifest(), ("bob", SHA), ("carol", "cd" * 32)))
    result = evaluate_cli("-f", str(path), "--approvals")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("model churn-v3 to production: allow (policy sha256:")
    assert lines[1:] == [
        "approvals counted: bob (production)",
        f"approval not counted: carol's approval was for artifact {'cd' * 32}, not the "
        f"model's {SHA}",
    ]


def test_eval_of_the_owners_own_approval_still_requires_another(tmp_path: Path) -> None:
    path = write(tmp_path, approved(manifest(), ("alice", SHA)))
    result = evaluate_cli("-f", str(path), "--approvals")
    assert result.exit_code == 3
    assert "approval not counted: alice authored model churn-v3" in result.stdout


def test_eval_stage_overrides_the_spec(tmp_path: Path) -> None:
    path = write(tmp_path, manifest(calibration={}))
    assert evaluate_cli("-f", str(path)).exit_code == 1
    staging = evaluate_cli("-f", str(path), "--stage", "staging")
    assert staging.exit_code == 0, staging.output
    assert "model churn-v3 to staging: allow" in staging.stdout
    unknown = evaluate_cli("-f", str(path), "--stage", "prod")
    assert unknown.exit_code == 1
    assert "unknown_stage: prod is not a stage" in unknown.stdout


def test_eval_json(tmp_path: Path) -> None:
    path = write(tmp_path, approved(manifest(), ("bob", SHA), ("carol", "cd" * 32)))
    result = evaluate_cli("-f", str(path), "--approvals", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {
        "model": "churn-v3",
        "namespace": "default",
        "stage": "production",
        "decision": "allow",
        "violations": [],
        "bundleDigest": json.loads((POLICIES / "policy-pin.json").read_text())["bundleDigest"],
        "approvals": [
            {
                "user": "bob",
                "stage": "production",
                "at": "2024-05-01T10:00:00Z",
                "comment": "",
                "groups": [],
                "keyId": None,
                "sha256": SHA,
            }
        ],
        "approvalsIgnored": [
            f"carol's approval was for artifact {'cd' * 32}, not the model's {SHA}"
        ],
    }
    denied = evaluate_cli("-f", str(write(tmp_path, manifest(calibration={}))), "--json")
    assert denied.exit_code == 1
    assert json.loads(denied.stdout)["violations"][0].startswith("calibration_missing: ")


def test_eval_picks_the_named_model_of_a_file(tmp_path: Path) -> None:
    other = manifest(calibration={})
    other["metadata"]["name"] = "churn-v4"
    path = write(tmp_path, manifest(), other)
    several = evaluate_cli("-f", str(path))
    assert several.exit_code == 2
    assert "holds several Models (churn-v3, churn-v4); name one" in several.stderr
    picked = evaluate_cli("churn-v4", "-f", str(path))
    assert picked.exit_code == 1
    assert "model churn-v4 to production: deny" in picked.stdout


def test_eval_of_a_hand_registered_model_takes_the_source_artifact(tmp_path: Path) -> None:
    doc = manifest()
    doc["spec"]["source"] = {"artifactUri": "s3://bucket/model", "sha256": SHA}
    del doc["status"]["artifactUri"], doc["status"]["sha256"]
    result = evaluate_cli("-f", str(write(tmp_path, doc)), "--stage", "staging", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["decision"] == "allow"


def test_eval_with_an_unpinned_policy_set_denies(tmp_path: Path, policy_dir: Path) -> None:
    (policy_dir / "policy-pin.json").unlink()
    path = write(tmp_path, manifest())
    result = runner.invoke(app, ["eval", "-f", str(path), "--dir", str(policy_dir)])
    assert result.exit_code == 1
    assert "model churn-v3 to production: deny (policy not loaded)" in result.stdout
    assert "  policy_error: the policy set in" in result.stdout


def test_eval_reports_what_it_cannot_read(tmp_path: Path) -> None:
    missing = evaluate_cli("-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
    assert "no such file or directory" in missing.stderr
    invalid = manifest()
    invalid["spec"]["task"] = "clustering"
    bad = evaluate_cli("-f", str(write(tmp_path, invalid)))
    assert bad.exit_code == 2
    assert "spec.task" in bad.stderr
    no_model = evaluate_cli()
    assert no_model.exit_code == 2
    assert "name a Model" in no_model.stderr


def stored(tmp_path: Path, doc: dict[str, Any]) -> Store:
    store = Store(tmp_path / "home")
    status = doc.pop("status")
    store.apply(doc)
    store.update_status("Model", doc["metadata"]["name"], status)
    return store


def test_eval_reads_a_model_from_the_local_store_without_changing_it(tmp_path: Path) -> None:
    store = stored(tmp_path, approved(manifest(calibration={"ece": 0.07}), ("bob", SHA)))
    path = store.home / "objects" / "models" / "default" / "churn-v3.json"
    before = path.read_bytes()
    result = evaluate_cli("model/churn-v3", "--approvals")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:] == [
        "  calibration_ece: expected calibration error 0.07 > 0.05",
        "approvals counted: bob (production)",
    ]
    assert path.read_bytes() == before
    assert store.events_for("Model", "churn-v3") == []


def test_eval_of_a_model_not_in_the_store(tmp_path: Path) -> None:
    result = evaluate_cli("churn-v9")
    assert result.exit_code == 2
    assert 'models "churn-v9" not found' in result.stderr
    assert not (tmp_path / "home").exists()  # nothing was created
    stored(tmp_path, manifest())
    again = evaluate_cli("churn-v9")
    assert again.exit_code == 2 and 'models "churn-v9" not found' in again.stderr
    wrong_kind = evaluate_cli("deployment/churn-v3")
    assert wrong_kind.exit_code == 2 and "is not a Model" in wrong_kind.stderr


@pytest.mark.parametrize(
    "evidence",
    [{}, {"calibration": {"ece": 0.09}}, {"fairness": {}}],
    ids=["passes", "uncalibrated", "no-fairness-figures"],
)
def test_eval_decides_as_the_local_control_plane(tmp_path: Path, evidence: dict[str, Any]) -> None:
    from aiml024.local.controlplane import LocalControlPlane

    store = stored(tmp_path, approved(manifest(**evidence), ("bob", SHA), ("carol", "cd" * 32)))
    result = evaluate_cli("churn-v3", "--approvals", "--json")
    shown = json.loads(result.stdout)
    recorded = LocalControlPlane(store.home, POLICIES).reconcile_model("churn-v3").status
    assert recorded is not None and recorded.policy is not None
    assert (shown["decision"], shown["violations"]) == (
        recorded.policy.decision,
        recorded.policy.violations,
    )
    assert shown["bundleDigest"] == recorded.policy.bundle_digest
    assert shown["approvals"] == [
        a.model_dump(mode="json", by_alias=True) for a in recorded.approvals
    ]
    assert result.exit_code == {"allow": 0, "deny": 1, "require_approval": 3}[shown["decision"]]


def test_show_input_prints_the_document_the_gates_evaluate(tmp_path: Path) -> None:
    doc = approved(manifest(calibration={"ece": 0.09}), ("bob", SHA))
    path = write(tmp_path, doc)
    shown = evaluate_cli("-f", str(path), "--approvals", "--show-input")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    model = Model.model_validate(doc)
    status = model.status
    assert status is not None
    assert status.approvals == []  # the approval is in the annotation, counted by --approvals
    counted = [Approval(user="bob", stage="production", at=WHEN, sha256=SHA)]
    assert document == policy_input(model, "production", counted)
    assert document["model"]["evidence"]["calibration"] == {"ece": 0.09}
    # Evaluated as it is printed (as `opa eval --input` would), it is the decision eval shows.
    bundle = load_bundle(POLICIES)
    raw = RegorusEngine().evaluate(bundle, RESULT_QUERY, document)
    decided = json.loads(evaluate_cli("-f", str(path), "--approvals", "--json").stdout)
    assert (raw["decision"], raw["violations"]) == (decided["decision"], decided["violations"])
    assert raw["violations"] == ["calibration_ece: expected calibration error 0.09 > 0.05"]
    staging = json.loads(evaluate_cli("-f", str(path), "--stage", "staging", "--show-input").stdout)
    assert (staging["stage"], staging["approvals"]) == ("staging", [])
