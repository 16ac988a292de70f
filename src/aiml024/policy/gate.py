"""The promotion gate: a Model's evidence -> Rego input -> allow / deny / require_approval.

Fails closed: a missing or unreadable directory, no policies, a policy set that does not match
its pin (or the expected digest), a parse or evaluation error, a missing or malformed result and
any other error all deny with a `policy_error: ...` violation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiml024.api.common import BREAK_GLASS_RECORDS
from aiml024.api.model import Approval, Model, ModelStatus, PolicyDecision

from .engine import PolicyEngine, PolicyError, RegorusEngine, load_bundle

RESULT_QUERY = "data.aiml024.promotion.result"
DECISIONS = ("allow", "deny", "require_approval")
POLICY_DIR_ENV = "AIML024_POLICY_DIR"
# A break-glass needs a written justification at least this long (promotion.rego's
# min_justification says the same), and applies to the stages a policy can deny.
BREAK_GLASS_MIN_JUSTIFICATION = 20
BREAKABLE_STAGES = ("staging", "production")
FROM_MODEL: Any = object()  # policy_input's default: the break-glass recorded on the Model


@dataclass(frozen=True)
class GateResult:
    decision: str
    violations: list[str] = field(default_factory=list)
    bundle_digest: str = ""
    stage: str = ""
    # With a break-glass that counted: the violations it overrode ([] for none); else None.
    overridden: list[str] | None = None

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


def break_glass_records(annotations: dict[str, str]) -> list[dict[str, Any]]:
    """The break-glass records in the `aiml024.io/break-glass-records` annotation (written by
    the admission webhook or `aiml024 promote --break-glass`), oldest first."""
    try:
        records = json.loads(annotations.get(BREAK_GLASS_RECORDS) or "[]")
    except ValueError:
        return []
    if not isinstance(records, list):
        return []
    return [r for r in records if isinstance(r, dict) and r.get("user") and r.get("stage")]


def break_glass_problem(model: Model, record: dict[str, Any], stage: str) -> str | None:
    """Why a break-glass record does not count for promoting `model` to `stage`; None if it
    does. The same conditions as promotion.rego's break_glass_problems."""
    user = str(record.get("user") or "")
    sha = (model.status or ModelStatus()).sha256
    owner = model.spec.owner
    justification = record.get("justification")
    text = justification.strip() if isinstance(justification, str) else ""
    if stage not in BREAKABLE_STAGES or record.get("stage") != stage:
        return f"{user} broke the glass for stage {record.get('stage')}, not {stage}"
    if not sha or record.get("sha256") != sha:
        return (
            f"{user} broke the glass for artifact {record.get('sha256') or '(none)'}, not the "
            f"model's {sha or '(none yet)'}"
        )
    if owner and user.strip().lower() == owner.strip().lower():
        return (
            f"{user} authored model {model.metadata.name} and cannot break the glass on it "
            "(four eyes)"
        )
    if len(text) < BREAK_GLASS_MIN_JUSTIFICATION:
        return (
            f"{user}'s justification {text!r} is shorter than "
            f"{BREAK_GLASS_MIN_JUSTIFICATION} characters"
        )
    return None


def counted_break_glass(model: Model, stage: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(the break-glass that counts for `stage`: the newest record for this stage and the
    model's current digest that passes break_glass_problem, or None; why the other records
    for `stage` do not count). Records for other stages are not this request's business."""
    counted: dict[str, Any] | None = None
    ignored: list[str] = []
    for record in break_glass_records(model.metadata.annotations):
        if record.get("stage") != stage:
            continue
        problem = break_glass_problem(model, record, stage)
        if problem:
            ignored.append(problem)
        else:
            if counted is not None:
                ignored.append(f"{counted['user']}'s break-glass was replaced by a newer one")
            counted = record
    return counted, ignored


def policy_input(
    model: Model,
    stage: str,
    approvals: list[Approval] | None = None,
    config: dict[str, Any] | None = None,
    break_glass: dict[str, Any] | None = FROM_MODEL,
) -> dict[str, Any]:
    """The input document the Rego policies see (policies/README.md). Pure.

    `breakGlass` is present only with a break-glass record that counts; by default the one
    `counted_break_glass` finds on the Model for `stage`, or the record given (None: none).
    """
    status = model.status or ModelStatus()
    if approvals is None:
        approvals = status.approvals
    if break_glass is FROM_MODEL:
        break_glass, _ = counted_break_glass(model, stage)
    document: dict[str, Any] = {
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
    if break_glass is not None:
        document["breakGlass"] = dict(break_glass)
    return document


def evaluate(
    model: Model,
    stage: str,
    policy_dir: Path,
    approvals: list[Approval] | None = None,
    engine: PolicyEngine | None = None,
    *,
    expected_digest: str | None = None,
    break_glass: dict[str, Any] | None = FROM_MODEL,
) -> GateResult:
    """Evaluate data.aiml024.promotion.result for promoting `model` to `stage` (with the
    break-glass recorded on the Model that counts for `stage`, unless one is given)."""
    return decide(
        RESULT_QUERY,
        DECISIONS,
        lambda: policy_input(model, stage, approvals, break_glass=break_glass),
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
        overridden = read_overridden(raw, query)
    except PolicyError as error:
        return GateResult("deny", [f"policy_error: {error}"], digest, stage)
    except Exception as error:  # noqa: BLE001 - fail closed on whatever went wrong
        reason = f"{type(error).__name__}: {error}"
        return GateResult("deny", [f"policy_error: unexpected error: {reason}"], digest, stage)
    return GateResult(decision, violations, digest, stage, overridden)


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


def read_overridden(raw: Any, query: str = RESULT_QUERY) -> list[str] | None:
    """The violations a counted break-glass overrode (the result's optional `breakGlass`
    object: {user, stage, overridden}); None without one. PolicyError when malformed."""
    block = raw.get("breakGlass") if isinstance(raw, dict) else None
    if block is None:
        return None
    overridden = block.get("overridden") if isinstance(block, dict) else None
    if not isinstance(overridden, list) or not all(isinstance(v, str) for v in overridden):
        raise PolicyError(
            f"{query} is malformed: breakGlass must be an object with a list of strings "
            f"overridden, got {block!r}"
        )
    return overridden


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
            + (f": {details}" if details else "")
        )
    if gate_result.decision == "require_approval":
        return None, f"{name} waits for approval before {requested_stage}: {details}"
    return None, f"promotion of {name} to {requested_stage} denied: {details}"
