"""The deployment gate (which Models may serve where) and approver groups, through Python."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_policy_gate import POLICIES, make_model

from aiml024.api.common import ObjectMeta
from aiml024.api.deployment import Canary, Deployment, DeploymentSpec, Strategy
from aiml024.api.model import Approval, Model, PolicyDecision
from aiml024.policy import (
    ENVIRONMENT_LABEL,
    deployment_input,
    evaluate,
    evaluate_deployment,
    write_pin,
)

WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def served(name: str, stage: str = "production", decision: str | None = "allow") -> Model:
    model = make_model()
    assert model.status is not None
    status = model.status.model_copy(
        update={
            "stage": stage,
            "policy": None
            if decision is None
            else PolicyDecision(
                decision=decision,  # type: ignore[arg-type]
                bundle_digest="sha256:abc",
                stage=stage,  # type: ignore[arg-type]
                evaluated_at=WHEN,
            ),
        }
    )
    return model.model_copy(
        update={"metadata": ObjectMeta(name=name, namespace="ml"), "status": status}
    )


def deployment(require: str = "production", canary: str | None = "churn-v4") -> Deployment:
    strategy = (
        Strategy(type="canary", canary=Canary(model=canary, weight=10)) if canary else Strategy()
    )
    return Deployment(
        metadata=ObjectMeta(name="churn", namespace="ml"),
        spec=DeploymentSpec(model="churn-v3", strategy=strategy, require_stage=require),  # type: ignore[arg-type]
    )


def env(name: str) -> dict[str, str]:
    return {ENVIRONMENT_LABEL: name, "team": "retention"}


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


# --- the input document -------------------------------------------------------------------


def test_deployment_input_is_the_documented_document() -> None:
    stable, canary = served("churn-v3"), served("churn-v4", "staging")
    doc = deployment_input(
        deployment(), [("stable", stable), ("canary", canary)], env("production")
    )
    assert doc == {
        "deployment": {
            "name": "churn",
            "namespace": "ml",
            "namespaceLabels": {ENVIRONMENT_LABEL: "production", "team": "retention"},
            "requireStage": "production",
        },
        "models": [
            {
                "role": "stable",
                "name": "churn-v3",
                "stage": "production",
                "decision": "allow",
                "decisionStage": "production",
                "sha256": "ab" * 32,
                "bundleDigest": "sha256:abc",
            },
            {
                "role": "canary",
                "name": "churn-v4",
                "stage": "staging",
                "decision": "allow",
                "decisionStage": "staging",
                "sha256": "ab" * 32,
                "bundleDigest": "sha256:abc",
            },
        ],
    }
    json.dumps(doc, allow_nan=False)


def test_a_route_whose_model_was_not_found_appears_undecided() -> None:
    doc = deployment_input(deployment(), [("stable", served("churn-v3"))], {})
    assert doc["models"][1] == {
        "role": "canary",
        "name": "churn-v4",
        "stage": None,
        "decision": None,
        "decisionStage": None,
        "sha256": None,
        "bundleDigest": None,
    }


def test_a_model_without_status_appears_undecided() -> None:
    bare = served("churn-v3").model_copy(update={"status": None})
    entry = deployment_input(deployment(canary=None), [("stable", bare)], {})["models"][0]
    assert entry["decision"] is None and entry["stage"] is None


# --- decisions ---------------------------------------------------------------------------------


def evaluate_for(
    dep: Deployment, models: list[tuple[str, Model]], labels: dict[str, str], policy_dir: Path
) -> tuple[str, list[str]]:
    result = evaluate_deployment(deployment_input(dep, models, labels), policy_dir)
    assert result.stage == dep.spec.require_stage
    return result.decision, result.violations


def test_production_models_serve_in_a_production_namespace() -> None:
    models = [("stable", served("churn-v3")), ("canary", served("churn-v4"))]
    result = evaluate_deployment(
        deployment_input(deployment(), models, env("production")), POLICIES
    )
    assert (result.decision, result.violations) == ("allow", [])
    assert result.bundle_digest.startswith("sha256:")


def test_any_stage_only_in_development() -> None:
    models = [("stable", served("churn-v3", "staging"))]
    dep = deployment("any", canary=None)
    assert evaluate_for(dep, models, env("development"), POLICIES) == ("allow", [])
    decision, violations = evaluate_for(dep, models, env("staging"), POLICIES)
    assert decision == "deny"
    assert violations == [
        "stage_any_outside_development: requireStage any is allowed only in namespaces labelled "
        "aiml024.io/environment=development; namespace ml is labelled aiml024.io/environment=staging"
    ]


def test_production_namespace_needs_production_requirement() -> None:
    dep = deployment("staging", canary=None)
    decision, violations = evaluate_for(
        dep, [("stable", served("churn-v3"))], env("production"), POLICIES
    )
    assert decision == "deny"
    assert violations[0].startswith("stage_below_environment_minimum: namespace ml is labelled")


def test_missing_and_refused_models_deny() -> None:
    refused = served("churn-v4", decision="deny")
    decision, violations = evaluate_for(
        deployment(),
        [("stable", served("churn-v3")), ("canary", refused)],
        env("production"),
        POLICIES,
    )
    assert decision == "deny"
    assert violations == [
        "model_not_allowed: churn-v4 (canary) has decision deny for stage production; this "
        "deployment needs decision allow for production"
    ]
    decision, violations = evaluate_for(
        deployment(), [("stable", served("churn-v3"))], {}, POLICIES
    )
    assert decision == "deny"
    assert violations[0].startswith("model_no_decision: churn-v4 (canary) has no recorded")


def test_deployment_gate_fails_closed(policy_dir: Path, tmp_path: Path) -> None:
    doc = deployment_input(deployment(canary=None), [("stable", served("churn-v3"))], {})
    missing = evaluate_deployment(doc, tmp_path / "nope")
    assert missing.decision == "deny"
    assert missing.violations == [
        f"policy_error: policy directory {tmp_path / 'nope'} does not exist"
    ]

    (policy_dir / "deployment.rego").unlink()  # the pin notices before the undefined result
    result = evaluate_deployment(doc, policy_dir)
    assert result.violations[0].startswith(
        "policy_error: policy set does not match its pin: deployment.rego was deleted"
    )
    write_pin(policy_dir)
    undefined = evaluate_deployment(doc, policy_dir)
    assert undefined.violations == [
        "policy_error: data.aiml024.deployment.result is undefined; the policies must define it"
    ]


def test_deployment_result_may_not_ask_for_approval(policy_dir: Path) -> None:
    (policy_dir / "deployment.rego").write_text(
        'package aiml024.deployment\n\nresult := {"decision": "require_approval", "violations": []}\n'
    )
    write_pin(policy_dir)
    doc: dict[str, Any] = {"deployment": {"requireStage": "production"}, "models": []}
    result = evaluate_deployment(doc, policy_dir)
    assert result.decision == "deny"
    assert "decision must be one of allow, deny, got 'require_approval'" in result.violations[0]


def test_malformed_input_denies() -> None:
    result = evaluate_deployment({"deployment": {"requireStage": "production"}, "models": [float("nan")]}, POLICIES)  # fmt: skip
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error: the input document is not valid JSON")


# --- approver groups and the approved artifact, through the promotion gate -------------------


def require_groups(policy_dir: Path, groups: list[str]) -> None:
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    data["aiml024"]["thresholds"]["required_approver_groups"] = {"production": groups}
    data_file.write_text(json.dumps(data, indent=2))
    write_pin(policy_dir)


def by(user: str, groups: list[str], sha256: str | None = None) -> Approval:
    return Approval(user=user, stage="production", at=WHEN, groups=groups, sha256=sha256)


def test_the_default_lets_any_approver_count() -> None:
    assert evaluate(make_model(), "production", POLICIES, [by("bob", [])]).decision == "allow"


def test_a_risk_team_requires_its_group(policy_dir: Path) -> None:
    require_groups(policy_dir, ["risk-officer"])
    waiting = evaluate(make_model(), "production", policy_dir, [by("bob", ["ml-eng"])])
    assert waiting.decision == "require_approval"
    assert waiting.violations[0] == (
        "approval_ignored: bob is not in any of the groups risk-officer required to approve "
        "production (their groups: ml-eng)"
    )
    allowed = evaluate(make_model(), "production", policy_dir, [by("carol", ["risk-officer"])])
    assert (allowed.decision, allowed.violations) == ("allow", [])


def test_an_approval_of_another_artifact_does_not_count() -> None:
    stale = by("bob", [], sha256="cd" * 32)
    waiting = evaluate(make_model(), "production", POLICIES, [stale])
    assert waiting.decision == "require_approval"
    assert waiting.violations[0].startswith(f"approval_ignored: bob approved artifact {'cd' * 32}")
    current = by("bob", [], sha256="ab" * 32)
    assert evaluate(make_model(), "production", POLICIES, [current]).decision == "allow"


@pytest.mark.parametrize("package", ["promotion", "deployment"])
def test_every_rule_id_is_documented(package: str) -> None:
    readme = (POLICIES / "README.md").read_text()
    rule_ids = set(re.findall(r'"([a-z0-9_]+): ', (POLICIES / f"{package}.rego").read_text()))
    assert sorted(r for r in rule_ids if f"`{r}`" not in readme) == []
