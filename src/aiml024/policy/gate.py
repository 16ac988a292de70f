"""The promotion gate: a Model's evidence -> Rego input -> allow / deny / require_approval.

Fails closed: a missing or unreadable directory, no policies, a policy set that does not match
its pin (or the expected digest), a parse or evaluation error, a missing or malformed result and
any other error all deny with a `policy_error: ...` violation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiml024.api.model import Approval, Model, ModelStatus, PolicyDecision

from .engine import PolicyEngine, PolicyError, RegorusEngine, load_bundle

RESULT_QUERY = "data.aiml024.promotion.result"
DECISIONS = ("allow", "deny", "require_approval")
POLICY_DIR_ENV = "AIML024_POLICY_DIR"


@dataclass(frozen=True)
class GateResult:
    decision: str
    violations: list[str] = field(default_factory=list)
    bundle_digest: str = ""
    stage: str = ""

    def as_policy_decision(self, evaluated_at: datetime) -> PolicyDecision:
        """The decision as it is recorded in Model.status.policy."""
        return PolicyDecision(
            decision=self.decision,
            violations=list(self.violations),
            bundle_digest=self.bundle_digest,
            stage=self.stage,
            evaluated_at=evaluated_at,
        )


def default_policy_dir() -> Path:
    """$AIML024_POLICY_DIR, else policies/ at the root of the checkout this package runs from."""
    configured = os.environ.get(POLICY_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "policies"


def policy_input(
    model: Model,
    stage: str,
    approvals: list[Approval] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The input document the Rego policies see (policies/README.md). Pure."""
    status = model.status or ModelStatus()
    if approvals is None:
        approvals = status.approvals
    return {
        "model": {
            "name": model.metadata.name,
            "namespace": model.metadata.namespace,
            "labels": dict(model.metadata.labels),
            "task": model.spec.task,
            "owner": model.spec.owner,
            "primaryMetric": status.primary_metric,
            "metrics": dict(status.metrics),
            "baselineMetrics": dict(status.baseline_metrics),
            "evidence": status.evidence.model_dump(mode="json", by_alias=True),
            "lineage": (
                status.lineage.model_dump(mode="json", by_alias=True) if status.lineage else {}
            ),
            "sha256": status.sha256,
            "artifactUri": status.artifact_uri,
        },
        "stage": stage,
        "approvals": [a.model_dump(mode="json", by_alias=True) for a in approvals],
        "config": dict(config or {}),
    }


def evaluate(
    model: Model,
    stage: str,
    policy_dir: Path,
    approvals: list[Approval] | None = None,
    engine: PolicyEngine | None = None,
    *,
    expected_digest: str | None = None,
) -> GateResult:
    """Evaluate data.aiml024.promotion.result for promoting `model` to `stage`."""
    return decide(
        RESULT_QUERY,
        DECISIONS,
        lambda: policy_input(model, stage, approvals),
        policy_dir,
        stage,
        engine,
        expected_digest,
    )


def decide(
    query: str,
    decisions: tuple[str, ...],
    build_input: Callable[[], dict[str, Any]],
    policy_dir: Path,
    stage: str,
    engine: PolicyEngine | None = None,
    expected_digest: str | None = None,
) -> GateResult:
    """Load the pinned bundle, evaluate `query` over the input, read {decision, violations}.

    Every failure is a deny with a `policy_error: ...` violation, never an exception.
    """
    digest = ""
    try:
        bundle = load_bundle(Path(policy_dir), expected_digest=expected_digest)
        digest = bundle.digest
        raw = (engine or RegorusEngine()).evaluate(bundle, query, build_input())
        decision, violations = read_result(raw, query, decisions)
    except PolicyError as error:
        return GateResult("deny", [f"policy_error: {error}"], digest, stage)
    except Exception as error:  # noqa: BLE001 - fail closed on whatever went wrong
        reason = f"{type(error).__name__}: {error}"
        return GateResult("deny", [f"policy_error: unexpected error: {reason}"], digest, stage)
    return GateResult(decision, violations, digest, stage)


def read_result(
    raw: Any, query: str = RESULT_QUERY, decisions: tuple[str, ...] = DECISIONS
) -> tuple[str, list[str]]:
    """(decision, violations) from a result document; PolicyError when it is malformed."""
    if raw is None:
        raise PolicyError(f"{query} is undefined; the policies must define it")
    if not isinstance(raw, dict):
        raise PolicyError(f"{query} is malformed: expected an object, got {raw!r}")
    decision = raw.get("decision")
    if decision not in decisions:
        raise PolicyError(
            f"{query} is malformed: decision must be one of {', '.join(decisions)}, "
            f"got {decision!r}"
        )
    violations = raw.get("violations", [])
    if not isinstance(violations, list) or not all(isinstance(v, str) for v in violations):
        raise PolicyError(
            f"{query} is malformed: violations must be a list of strings, got {violations!r}"
        )
    if decision == "deny" and not violations:
        violations = ["policy_denied: the policy denied without naming a violation"]
    return decision, violations


def promotion_decision(
    model: Model, requested_stage: str, gate_result: GateResult
) -> tuple[str | None, str]:
    """(the new actual stage, or None to stay where it is; why). Only `allow` promotes."""
    name = model.metadata.name
    if gate_result.stage != requested_stage:
        return None, (
            f"the policy decision is for stage {gate_result.stage}, not {requested_stage}; "
            "evaluate the policy again"
        )
    details = "; ".join(gate_result.violations)
    if gate_result.decision == "allow":
        return requested_stage, (
            f"{name} promoted to {requested_stage} (policy {gate_result.bundle_digest})"
        )
    if gate_result.decision == "require_approval":
        return None, f"{name} waits for approval before {requested_stage}: {details}"
    return None, f"promotion of {name} to {requested_stage} denied: {details}"
