"""Decisions for an Experiment, shared by the embedded control plane and the kopf operator.

Pure functions of the object and what was observed (the Workflow's status); the caller
supplies the clock. Nothing here touches an API client, the filesystem or kopf.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..api import Experiment, ExperimentStatus, Model, SpecError, parse_object, set_condition
from ..api.common import APPLIED_BY
from ..api.experiment import Trial
from ..api.steps import LeaderboardRow

_PHASES = {"Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded",
           "Failed": "Failed", "Error": "Failed"}  # fmt: skip


def step_result(workflow_status: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The `result` output parameter of one DAG task, parsed, if that task has finished."""
    for node in (workflow_status.get("nodes") or {}).values():
        if node.get("displayName") != task or node.get("phase") != "Succeeded":
            continue
        for param in (node.get("outputs") or {}).get("parameters") or []:
            if param.get("name") == "result":
                parsed: dict[str, Any] = json.loads(param["value"])
                return parsed
    return None


def failed_step(workflow_status: dict[str, Any]) -> tuple[str, str] | None:
    for node in (workflow_status.get("nodes") or {}).values():
        if node.get("type") == "Pod" and node.get("phase") in ("Failed", "Error"):
            return node.get("displayName", "?"), node.get("message") or "failed"
    return None


def experiment_status(
    exp: Experiment,
    workflow_name: str,
    workflow_status: dict[str, Any] | None,
    now: datetime,
    progress: tuple[int, float | None] | None = None,
) -> ExperimentStatus:
    """The Experiment's status given its Workflow's status (None: not created yet).

    `progress` is (trials completed, best value so far) while the search step runs, when the
    caller can observe it (event lines locally, Argo's progress field in a cluster).
    """
    previous = exp.status or ExperimentStatus()
    generation = exp.metadata.generation or 1
    status = ExperimentStatus(
        observed_generation=generation,
        workflow_name=workflow_name,
        trials_total=exp.spec.search.trials,
        metric=exp.spec.effective_objective.split("_", 1)[1],
        conditions=list(previous.conditions),
        started_at=previous.started_at,
        model_name=previous.model_name if previous.workflow_name == workflow_name else None,
    )
    wf = workflow_status or {}
    phase = _PHASES.get(wf.get("phase") or "Pending", "Pending")
    status.phase = phase
    status.started_at = wf.get("startedAt") or status.started_at
    status.finished_at = wf.get("finishedAt")
    if progress is not None:
        status.trials_completed, status.best_value = progress

    search = step_result(wf, "search")
    if search is not None:
        status.trials_completed = int(search.get("trialsCompleted", 0))
        status.best_value = search.get("bestValue")
        best = search.get("bestTrial")
        status.best_trial = (
            Trial(number=best["number"], learner=best["learner"], value=best["value"],
                  params=best.get("params") or {})
            if best
            else None
        )  # fmt: skip
        board = search.get("leaderboard", [])[:10]
        status.leaderboard = [LeaderboardRow.model_validate(row).entry() for row in board]

    def cond(type_: str, value: bool, reason: str, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, type_, "True" if value else "False", reason, message, now, generation
        )

    if phase == "Succeeded":
        cond("Succeeded", True, "WorkflowSucceeded", f"workflow {workflow_name} succeeded")
        cond("Ready", True, "ModelRegistered", "training finished; the model is registered")
    elif phase == "Failed":
        step, message = failed_step(wf) or ("workflow", wf.get("message") or "failed")
        status.message = f"step {step} failed: {message}"
        cond("Succeeded", False, "StepFailed", status.message)
        cond("Ready", False, "WorkflowFailed", status.message)
    else:
        cond("Ready", False, "Training", f"workflow {workflow_name} is {phase.lower()}")
    return status


def invalid_spec_status(exp: Experiment, message: str, now: datetime) -> ExperimentStatus:
    """A spec the compiler refuses: permanent until the spec changes."""
    previous = exp.status or ExperimentStatus()
    status = ExperimentStatus(
        observed_generation=exp.metadata.generation or 1,
        phase="Failed",
        message=message,
        conditions=list(previous.conditions),
    )
    status.conditions = set_condition(
        status.conditions, "Ready", "False", "InvalidSpec", message, now,
        exp.metadata.generation or 1,
    )  # fmt: skip
    return status


def registered_model(workflow_status: dict[str, Any]) -> dict[str, Any] | None:
    """The Model manifest the register step produced, once the Workflow has succeeded."""
    if workflow_status.get("phase") != "Succeeded":
        return None
    result = step_result(workflow_status, "register")
    return result.get("model") if result else None


def model_to_register(exp: Experiment, manifest: dict[str, Any]) -> Model:
    """The Model the register step produced, owned by the Experiment's author.

    The author is who created the Experiment, as the webhook (or the local control plane)
    recorded it, never a name in the step's output.
    """
    model = parse_object(manifest, source="register step output")
    if not isinstance(model, Model):
        raise SpecError("register step output", [f"expected a Model, got {model.kind}"])
    model.spec.owner = exp.metadata.annotations.get(APPLIED_BY)
    return model
