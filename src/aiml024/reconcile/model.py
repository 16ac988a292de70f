"""Decisions for a Model: what the policy decision means for its stage, and who may approve."""

from __future__ import annotations

from datetime import datetime

from ..api import Model, ModelStatus, set_condition
from ..api.model import PolicyDecision
from ..policy import GateResult, promotion_decision

_REASON = {"allow": "PolicyAllowed", "require_approval": "ApprovalRequired", "deny": "PolicyDenied"}
_PHASE = {"require_approval": "PendingApproval", "deny": "Denied"}


# How far a stage lets a model go; archived serves nowhere.
STAGE_RANK = {"archived": -1, "none": 0, "staging": 1, "production": 2}


def stage_reaches(stage: str, required: str) -> bool:
    """Whether a model in `stage` may serve where `required` is asked for."""
    return STAGE_RANK.get(stage, -1) >= STAGE_RANK.get(required, 99)


def stage_without(stage: str, refused: str) -> str:
    """The actual stage once the policy does not allow `refused`: a model that stood at or
    above the refused stage falls just below it (a production model whose approval or evidence
    no longer holds goes back to staging); one below it stays."""
    if refused == "archived" or STAGE_RANK.get(stage, -1) < STAGE_RANK[refused]:
        return stage
    return next(s for s, rank in STAGE_RANK.items() if rank == STAGE_RANK[refused] - 1)


def status_after_gate(model: Model, gate: GateResult, now: datetime) -> ModelStatus:
    """Record the policy decision (for this artifact digest); the actual stage moves up only
    when the policy allows, and comes down when it no longer allows the stage it stood at."""
    status = (model.status or ModelStatus()).model_copy(deep=True)
    generation = model.metadata.generation or 1
    status.observed_generation = generation
    status.policy = gate.as_policy_decision(now).model_copy(update={"sha256": status.sha256})
    new_stage, reason = promotion_decision(model, model.spec.stage, gate)
    if new_stage is not None:
        status.stage = new_stage  # type: ignore[assignment]
    else:
        status.stage = stage_without(status.stage, model.spec.stage)  # type: ignore[assignment]
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
