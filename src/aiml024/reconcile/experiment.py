"""Decisions for an Experiment, shared by the embedded control plane and the kopf operator.

Pure functions of the object and what was observed (the Workflow's status); the caller
supplies the clock. Nothing here touches an API client, the filesystem or kopf.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api import (
    Experiment,
    ExperimentStatus,
    Model,
    ModelSpec,
    ModelStatus,
    ObjectMeta,
    SpecError,
    describe_validation_error,
    parse_object,
    set_condition,
)
from ..api.common import APPLIED_BY, DEFAULT_NAMESPACE, EXPERIMENT_LABEL, GENERATION_LABEL
from ..api.experiment import Trial
from ..api.model import ModelSource
from ..api.steps import REGISTRATION, LeaderboardRow, RegisterResult, run_root
from ..compiler.options import child_name

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


def not_owned_status(
    exp: Experiment, workflow_name: str, message: str, now: datetime
) -> ExperimentStatus:
    """A Workflow of the expected name that this Experiment does not own: nothing is read
    from it; the Experiment waits, saying why."""
    previous = exp.status or ExperimentStatus()
    generation = exp.metadata.generation or 1
    status = ExperimentStatus(
        observed_generation=generation,
        phase="Pending",
        workflow_name=workflow_name,
        message=message,
        conditions=list(previous.conditions),
    )
    status.conditions = set_condition(
        status.conditions, "Ready", "False", "WorkflowNotOwned", message, now, generation
    )
    return status


def model_version_name(exp: Experiment) -> str:
    """`<spec.model.name>-v<generation>`: each generation registers its own immutable Model."""
    base = exp.spec.model.name if exp.spec.model else f"{exp.metadata.name}-model"
    return child_name(base, f"-v{exp.metadata.generation or 1}")


def registration_uri(store: str, exp: Experiment, workflow_name: str) -> str:
    """Where this run's register step wrote its record: under the run's own root in the
    artifact store, which only the runtime writes (never the Workflow's status)."""
    root = run_root(
        store,
        exp.metadata.namespace or DEFAULT_NAMESPACE,
        exp.metadata.name,
        exp.metadata.uid or "",
        workflow_name,
    )
    return f"{root}/{REGISTRATION}"


def model_to_register(
    exp: Experiment, record: dict[str, Any], store: str, workflow_name: str
) -> Model:
    """The Model version this run registers, from the register step's record read back from
    `registration_uri`: the evidence (artifact, digest, metrics, card, lineage) comes from the
    record; its name, labels, source, stage and owner come from the Experiment, never from the
    record, and the record's artifacts (bundle, card, card signature) must lie under this run's
    own root. The owner is the Experiment's author as the webhook (or the local control plane)
    recorded it.
    """
    where = "registration record"
    try:
        result = RegisterResult.model_validate(record)
    except ValidationError as error:
        raise SpecError(where, describe_validation_error(error)) from None
    produced = parse_object(result.model, source=where)
    if not isinstance(produced, Model):
        raise SpecError(where, [f"expected a Model, got {produced.kind}"])
    evidence = produced.status or ModelStatus()
    root = registration_uri(store, exp, workflow_name).removesuffix(REGISTRATION)
    problems = [
        f"{name} {uri!r} is not under this run's artifacts ({root})"
        for name, uri in (
            ("artifactUri", evidence.artifact_uri),
            ("evidence.modelCardUri", evidence.evidence.model_card_uri),
        )
        if not _under(uri, root)
    ]
    signature = evidence.card_signature
    if signature is not None and not _under(signature.signature_uri, root):
        problems.append(
            f"cardSignature.signatureUri {signature.signature_uri!r} is not under this run's "
            f"artifacts ({root})"
        )
    if not evidence.sha256:
        problems.append("sha256 is missing")
    if problems:
        raise SpecError(where, problems)
    target = exp.spec.model
    return Model(
        metadata=ObjectMeta(
            name=model_version_name(exp),
            namespace=exp.metadata.namespace,
            labels={
                **(target.labels if target else {}),
                EXPERIMENT_LABEL: exp.metadata.name,
                GENERATION_LABEL: str(exp.metadata.generation or 1),
            },
        ),
        spec=ModelSpec(
            source=ModelSource(
                experiment=exp.metadata.name,
                workflow=workflow_name,
                trial=produced.spec.source.trial,
            ),
            task=produced.spec.task,
            stage="staging",
            owner=exp.metadata.annotations.get(APPLIED_BY),
            description=produced.spec.description,
        ),
        # Evidence only: no stage, policy decision or approvals are taken from a record.
        status=ModelStatus(
            artifact_uri=evidence.artifact_uri,
            sha256=evidence.sha256,
            metrics=evidence.metrics,
            baseline_metrics=evidence.baseline_metrics,
            primary_metric=evidence.primary_metric,
            evidence=evidence.evidence,
            leaderboard=evidence.leaderboard,
            lineage=evidence.lineage,
            card_signature=evidence.card_signature,
        ),
    )


def _under(uri: str | None, root: str) -> bool:
    """Whether `uri` names something inside `root` (which ends in "/"), with no `.` or `..`
    segment that could lead back out of it."""
    if not uri or not uri.startswith(root):
        return False
    return not {".", ".."} & set(uri[len(root) :].split("/"))


def registration_conflict(existing: Model, wanted: Model) -> str | None:
    """Why `wanted` cannot be registered over the Model of the same name, or None when the
    existing one is this very version (a repeated reconcile). A Model someone else made ahead
    of the run, even with the predictable source, is not adopted: its owner would not be the
    Experiment's author, and four eyes would count the wrong person."""
    status = existing.status or ModelStatus()
    if (
        existing.spec.source == wanted.spec.source
        and existing.spec.owner == wanted.spec.owner
        and status.artifact_uri in (None, (wanted.status or ModelStatus()).artifact_uri)
    ):
        return None
    if existing.spec.owner != wanted.spec.owner:
        return (
            f"model {existing.metadata.name} already exists, made by {existing.spec.owner or 'someone'}"
            f" rather than registered for this Experiment (author {wanted.spec.owner}); it is "
            "never adopted: delete it or set spec.model.name to register under a new name"
        )
    return (
        f"model {existing.metadata.name} already exists and names another artifact "
        f"({status.artifact_uri or existing.spec.source.artifact_uri}); a registered version is "
        "never replaced: set spec.model.name to register under a new name"
    )
