"""Decisions for a Model: what the policy decision means for its stage, and who may approve."""

from __future__ import annotations

from datetime import datetime

from ..api import Model, ModelStatus, set_condition
from ..api.model import PolicyDecision
from ..policy import GateResult, promotion_decision

_REASON = {"allow": "PolicyAllowed", "require_approval": "ApprovalRequired", "deny": "PolicyDenied"}
_PHASE = {"require_approval": "PendingApproval", "deny": "Denied"}


def status_after_gate(model: Model, gate: GateResult, now: datetime) -> ModelStatus:
    """Record the policy decision; the actual stage moves only when the policy allows."""
    status = (model.status or ModelStatus()).model_copy(deep=True)
    generation = model.metadata.generation or 1
    status.observed_generation = generation
    status.policy = gate.as_policy_decision(now)
    new_stage, reason = promotion_decision(model, model.spec.stage, gate)
    if new_stage is not None:
        status.stage = new_stage  # type: ignore[assignment]
    status.conditions = set_condition(
        status.conditions, "Promoted", "True" if new_stage else "False",
        _REASON[gate.decision], reason, now, generation,
    )  # fmt: skip
    status.phase = _PHASE.get(gate.decision) or status.stage.capitalize()
    return status


def gate_event(decision: PolicyDecision) -> tuple[str, str, str]:
    """The Kubernetes event (type, reason, message) that reports a policy decision."""
    message = f"stage {decision.stage}: {decision.decision}"
    if decision.violations:
        message += " (" + "; ".join(decision.violations) + ")"
    kind = "Warning" if decision.decision == "deny" else "Normal"
    return kind, _REASON[decision.decision], message


def with_source_artifact(model: Model) -> Model:
    """A Model registered by hand (spec.source.artifactUri + sha256) carries them in status.

    Models from an Experiment get their evidence from the register step instead.
    """
    source = model.spec.source
    status = model.status or ModelStatus()
    if source.experiment is not None or status.artifact_uri or not source.artifact_uri:
        return model
    filled = status.model_copy(
        update={"artifact_uri": source.artifact_uri, "sha256": source.sha256}
    )
    return model.model_copy(update={"status": filled})


def approval_problem(model: Model, user: str, stage: str) -> str | None:
    """Why `user` may not approve `model` for `stage`, or None when they may."""
    owner = model.spec.owner
    if owner and user.lower() == owner.lower():
        return (
            f"{user} authored model {model.metadata.name} and cannot approve it "
            "(four eyes: another person must approve)"
        )
    approvals = (model.status or ModelStatus()).approvals
    if any(a.user == user and a.stage == stage for a in approvals):
        return f"{user} has already approved model {model.metadata.name} for {stage}"
    return None
