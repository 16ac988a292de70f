"""The promotion gate: the product's Rego policy, its tests, the pin, and failing closed."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aiml024.api.common import ObjectMeta
from aiml024.api.model import (
    Approval,
    Evidence,
    Lineage,
    Model,
    ModelSource,
    ModelSpec,
    ModelStatus,
)
from aiml024.policy import (
    RESULT_QUERY,
    GateResult,
    RegorusEngine,
    default_policy_dir,
    evaluate,
    load_bundle,
    policy_input,
    promotion_decision,
    write_pin,
)
from aiml024.policy.engine import rego_tests, run_rego_test

POLICIES = Path(__file__).resolve().parents[2] / "policies"
WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def make_model(owner: str = "alice", **status: object) -> Model:
    fields: dict[str, object] = {
        "artifact_uri": "s3://aiml024-artifacts/churn/bundle",
        "sha256": "ab" * 32,
        "primary_metric": "auc",
        "metrics": {"auc": 0.84, "f1": 0.71},
        "baseline_metrics": {"auc": 0.78},
        "evidence": Evidence(
            model_card_uri="s3://aiml024-artifacts/churn/model_card.md",
            model_card_complete=True,
            pii_columns=["email"],
            pii_action="mask",
            sensitive_attributes=["sex"],
            fairness={
                "sex.demographic_parity_difference": 0.03,
                "sex.equalized_odds_difference": 0.05,
            },
            calibration={"ece": 0.02, "brier": 0.11},
        ),
        "lineage": Lineage(
            dataset_uri="s3://data/churn.parquet",
            dataset_fingerprint="fp-1",
            spec_hash="spec-1",
            code_version="0.1.0",
        ),
    }
    fields.update(status)
    return Model(
        metadata=ObjectMeta(name="churn-v3", namespace="risk"),
        spec=ModelSpec(
            source=ModelSource(experiment="churn"),
            task="classification",
            stage="production",
            owner=owner,
        ),
        status=ModelStatus(**fields),
    )


def approval(user: str, stage: str = "production") -> Approval:
    return Approval(user=user, stage=stage, at=WHEN)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the product's policies that a test may change."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


# --- the Rego unit tests, one pytest test per test_ rule -----------------------------------


@pytest.mark.parametrize("rule", rego_tests(POLICIES), ids=lambda rule: rule.rsplit(".", 1)[-1])
def test_rego_unit_test_passes(rule: str) -> None:
    assert run_rego_test(POLICIES, rule), f"{rule} failed (policies/promotion_test.rego)"


@pytest.mark.parametrize("package", ["promotion", "deployment"])
def test_every_violation_rule_has_a_rego_test(package: str) -> None:
    policy = (POLICIES / f"{package}.rego").read_text()
    tests = (POLICIES / f"{package}_test.rego").read_text()
    rule_ids = set(re.findall(r'"([a-z0-9_]+): ', policy))
    assert len(rule_ids) >= 5
    untested = sorted(r for r in rule_ids if f"{r}:" not in tests and f'"{r}"' not in tests)
    assert untested == []


# --- decisions a user sees -----------------------------------------------------------------


def test_good_model_with_a_non_owner_approval_is_allowed() -> None:
    result = evaluate(make_model(), "production", POLICIES, [approval("bob")])
    assert (result.decision, result.violations) == ("allow", [])
    assert result.stage == "production"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", result.bundle_digest)


def test_owner_approval_does_not_count() -> None:
    result = evaluate(make_model(), "production", POLICIES, [approval("alice")])
    assert result.decision == "require_approval"
    assert result.violations == [
        "approval_required: promotion to production needs an approval from someone other "
        "than the owner alice (approved so far by: alice)"
    ]


def test_approvals_default_to_those_recorded_on_the_model() -> None:
    model = make_model(approvals=[approval("bob")])
    assert evaluate(model, "production", POLICIES).decision == "allow"


def test_weak_model_is_denied_with_the_metric_and_threshold() -> None:
    model = make_model(metrics={"auc": 0.61}, baseline_metrics={"auc": 0.55})
    result = evaluate(model, "production", POLICIES, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations == ["metric_below_threshold: auc 0.61 < 0.70"]


def evidence(**changes: object) -> Evidence:
    """make_model()'s evidence with some fields replaced."""
    status = make_model().status
    assert status is not None
    return status.evidence.model_copy(update=changes)


def test_fairness_is_judged_for_every_sensitive_attribute() -> None:
    model = make_model(
        evidence=evidence(
            sensitive_attributes=["sex", "region"],
            fairness={
                "sex.demographic_parity_difference": 0.03,
                "sex.equalized_odds_difference": 0.05,
                "region.demographic_parity_difference": 0.23,
            },
        )
    )
    result = evaluate(model, "production", POLICIES, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations == [
        "fairness_demographic_parity: region.demographic_parity_difference 0.23 > 0.10",
        "fairness_missing: evidence.fairness has no region.equalized_odds_difference; every "
        "sensitive attribute needs its demographic parity and equalized odds differences",
    ]


def test_equalized_odds_above_the_threshold_is_denied() -> None:
    unfair = evidence(
        fairness={
            "sex.demographic_parity_difference": 0.03,
            "sex.equalized_odds_difference": 0.12,
        }
    )
    result = evaluate(make_model(evidence=unfair), "production", POLICIES, [approval("bob")])
    assert (result.decision, result.violations) == (
        "deny",
        ["fairness_equalized_odds: sex.equalized_odds_difference 0.12 > 0.10"],
    )


def test_without_sensitive_attributes_no_fairness_figure_is_needed() -> None:
    plain = evidence(sensitive_attributes=[], fairness={})
    result = evaluate(make_model(evidence=plain), "production", POLICIES, [approval("bob")])
    assert (result.decision, result.violations) == ("allow", [])


@pytest.mark.parametrize(
    ("calibration", "violation"),
    [
        (
            {},
            "calibration_missing: a classification model needs evidence.calibration.ece "
            "(expected calibration error on the holdout); the model reports none",
        ),
        (
            {"brier": 0.1},
            "calibration_missing: a classification model needs evidence.calibration.ece "
            "(expected calibration error on the holdout); the model reports brier",
        ),
        ({"ece": 0.08, "brier": 0.1}, "calibration_ece: expected calibration error 0.08 > 0.05"),
    ],
)
def test_a_classifier_needs_calibrated_probabilities(
    calibration: dict[str, float], violation: str
) -> None:
    model = make_model(evidence=evidence(calibration=calibration))
    result = evaluate(model, "production", POLICIES, [approval("bob")])
    assert (result.decision, result.violations) == ("deny", [violation])
    assert evaluate(model, "staging", POLICIES).decision == "allow"


def test_a_regressor_needs_no_calibration() -> None:
    model = make_model(
        primary_metric="rmse",
        metrics={"rmse": 3.1, "r2": 0.5},
        baseline_metrics={"rmse": 4.0},
        evidence=evidence(calibration={}),
    )
    model.spec.task = "regression"
    result = evaluate(model, "production", POLICIES, [approval("bob")])
    assert (result.decision, result.violations) == ("allow", [])


def test_staging_needs_lineage_but_not_quality() -> None:
    weak = make_model(metrics={"auc": 0.55})
    assert evaluate(weak, "staging", POLICIES).decision == "allow"
    result = evaluate(make_model(lineage=None, sha256=None), "staging", POLICIES)
    assert result.decision == "deny"
    assert result.violations == [
        "lineage_missing: lineage.datasetFingerprint, lineage.specHash, lineage.codeVersion "
        "not recorded; promotion needs the dataset fingerprint, spec hash and code version",
        "sha256_missing: the model has no sha256 digest, so its artifact cannot be verified",
    ]


# --- failing closed ------------------------------------------------------------------------


def test_missing_policy_directory_denies(tmp_path: Path) -> None:
    result = evaluate(make_model(), "production", tmp_path / "nope", [approval("bob")])
    assert result.decision == "deny"
    assert result.violations == [
        f"policy_error: policy directory {tmp_path / 'nope'} does not exist"
    ]


def test_directory_with_only_tests_denies(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "promotion_test.rego", tmp_path)
    result = evaluate(make_model(), "production", tmp_path, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error: no policies (*.rego")


def test_syntax_error_denies_with_policy_error(policy_dir: Path) -> None:
    (policy_dir / "extra.rego").write_text("package aiml024.promotion\n\nallow if {\n")
    write_pin(policy_dir)
    result = evaluate(make_model(), "production", policy_dir, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations == ["policy_error: extra.rego:4:1: expecting expression"]


def test_runtime_error_denies_with_policy_error(policy_dir: Path) -> None:
    (policy_dir / "promotion.rego").write_text(
        "package aiml024.promotion\n\n"
        "n := count(input.approvals)\n\n"
        'result := {"decision": "allow", "violations": [sprintf("%v", [1 / n])]}\n'
    )
    write_pin(policy_dir)
    result = evaluate(make_model(), "production", policy_dir, [])
    assert result.decision == "deny"
    assert result.violations == [
        "policy_error: evaluating data.aiml024.promotion.result failed: "
        "promotion.rego:5:65: divide by zero"
    ]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("other := 1", "data.aiml024.promotion.result is undefined"),
        ('result := "allow"', "data.aiml024.promotion.result is malformed: expected an object"),
        ('result := {"decision": "yes"}', "decision must be one of allow, deny, require_approval"),
        ('result := {"decision": "allow", "violations": [1]}', "violations must be a list"),
    ],
)
def test_missing_or_malformed_result_denies(policy_dir: Path, rule: str, problem: str) -> None:
    (policy_dir / "promotion.rego").write_text(f"package aiml024.promotion\n\n{rule}\n")
    write_pin(policy_dir)
    result = evaluate(make_model(), "production", policy_dir, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error: ")
    assert problem in result.violations[0]


def test_invalid_data_json_denies(policy_dir: Path) -> None:
    (policy_dir / "data.json").write_text("{not json")
    write_pin(policy_dir)
    result = evaluate(make_model(), "production", policy_dir, [approval("bob")])
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error: data.json: ")


def test_missing_thresholds_deny(policy_dir: Path) -> None:
    (policy_dir / "data.json").unlink()
    write_pin(policy_dir)
    result = evaluate(make_model(), "production", policy_dir, [approval("bob")])
    assert result.decision == "deny"
    assert "policy_error: data.aiml024.thresholds is not loaded (policies/data.json)" in (
        result.violations
    )


# --- the bundle digest ---------------------------------------------------------------------


def test_digest_changes_when_a_policy_or_threshold_changes(policy_dir: Path) -> None:
    model, approvals = make_model(), [approval("bob")]
    before = evaluate(model, "production", policy_dir, approvals).bundle_digest
    test_file = policy_dir / "promotion_test.rego"
    test_file.write_text(test_file.read_text() + "\n# a comment in a test file\n")
    assert evaluate(model, "production", policy_dir, approvals).bundle_digest == before

    policy = policy_dir / "promotion.rego"
    policy.write_text(policy.read_text() + "\n# a comment\n")
    write_pin(policy_dir)
    after_policy = evaluate(model, "production", policy_dir, approvals).bundle_digest
    assert after_policy not in ("", before)

    data = policy_dir / "data.json"
    data.write_text(data.read_text().replace('"max_ece": 0.05', '"max_ece": 0.04'))
    write_pin(policy_dir)
    assert evaluate(model, "production", policy_dir, approvals).bundle_digest not in (
        "",
        after_policy,
    )


# --- the input document and the promotion decision -----------------------------------------


def test_policy_input_is_the_documented_document() -> None:
    doc = policy_input(make_model(), "production", [approval("bob")])
    assert set(doc) == {"model", "stage", "approvals", "config"}
    assert doc["stage"] == "production"
    assert doc["approvals"] == [
        {
            "user": "bob",
            "stage": "production",
            "at": "2024-05-01T10:00:00Z",
            "comment": "",
            "groups": [],
            "keyId": None,
            "sha256": None,
        }
    ]
    model = doc["model"]
    assert model["owner"] == "alice"
    assert model["primaryMetric"] == "auc"
    assert model["baselineMetrics"] == {"auc": 0.78}
    assert model["evidence"]["modelCardComplete"] is True
    assert model["evidence"]["piiAction"] == "mask"
    assert model["lineage"]["datasetFingerprint"] == "fp-1"
    assert model["sha256"] == "ab" * 32


def readme_input_document() -> dict[str, Any]:
    readme = (POLICIES / "README.md").read_text()
    section = readme.split("## Promotion input document", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    return dict(json.loads(block.group(1)))


def test_the_documented_input_document_has_every_field_and_is_allowed() -> None:
    documented = readme_input_document()
    built = policy_input(make_model(), "production", [approval("bob")])
    assert set(documented) == set(built)
    assert set(documented["model"]) == set(built["model"])
    assert set(documented["model"]["evidence"]) == set(built["model"]["evidence"])
    assert set(documented["model"]["lineage"]) == set(built["model"]["lineage"])
    assert set(documented["approvals"][0]) == set(built["approvals"][0])
    raw = RegorusEngine().evaluate(load_bundle(POLICIES), RESULT_QUERY, documented)
    assert raw == {"decision": "allow", "violations": []}


def test_policy_input_without_status() -> None:
    model = make_model().model_copy(update={"status": None})
    doc = policy_input(model, "staging")
    assert doc["model"]["lineage"] == {}
    assert doc["model"]["sha256"] is None
    assert doc["approvals"] == []


def test_only_allow_promotes() -> None:
    model = make_model()
    allow = GateResult("allow", [], "sha256:abc", "production")
    assert promotion_decision(model, "production", allow) == (
        "production",
        "churn-v3 promoted to production (policy sha256:abc)",
    )
    wait = GateResult("require_approval", ["approval_required: x"], "sha256:abc", "production")
    assert promotion_decision(model, "production", wait) == (
        None,
        "churn-v3 waits for approval before production: approval_required: x",
    )
    deny = GateResult("deny", ["sha256_missing: y", "lineage_missing: z"], "", "production")
    assert promotion_decision(model, "production", deny) == (
        None,
        "promotion of churn-v3 to production denied: sha256_missing: y; lineage_missing: z",
    )
    stale = promotion_decision(model, "staging", allow)
    assert stale[0] is None
    assert "not staging" in stale[1]


def test_gate_result_records_as_the_model_status_policy() -> None:
    result = evaluate(make_model(), "production", POLICIES, [approval("bob")])
    recorded = result.as_policy_decision(WHEN)
    assert recorded.decision == "allow"
    assert recorded.bundle_digest == result.bundle_digest


def test_default_policy_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AIML024_POLICY_DIR", raising=False)
    assert default_policy_dir() == POLICIES
    monkeypatch.setenv("AIML024_POLICY_DIR", str(tmp_path))
    assert default_policy_dir() == tmp_path


def test_nan_metric_denies_instead_of_passing() -> None:
    result = evaluate(make_model(metrics={"auc": float("nan")}), "production", POLICIES)
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error: the input document is not valid JSON")
