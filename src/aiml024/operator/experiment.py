"""Experiment: ensure this generation's Workflow, mirror its progress, register the Model.

Level-triggered: every call reads the Experiment and its Workflow afresh, decides with
aiml024.reconcile.experiment, acts idempotently and writes the whole status only if the
Experiment has not changed since it was read (a stale write conflicts and is redone).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api import Experiment, ExperimentStatus, ObjectMeta, SpecError
from ..compiler import CompileError, compile_experiment
from ..reconcile import experiment as experiment_rules
from . import model as model_handlers
from .config import MANAGED, OperatorConfig
from .kube import EXPERIMENTS, MODELS, WORKFLOWS, Conflict, Kube, merge_diff
from .rules import needs_workflow, search_progress

Obj = dict[str, Any]
log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def reconcile(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, ensure: bool = True
) -> None:
    """`ensure`: create the Workflow when missing (the Experiment's own handlers); the Workflow
    watcher only mirrors, so a stale Workflow event cannot resurrect anything."""
    for _attempt in range(5):
        try:
            await _reconcile_once(kube, config, namespace, name, ensure)
            return
        except Conflict:
            continue  # someone wrote in between: read again, decide again
    raise kopf.TemporaryError(f"experiment {name} kept changing while reconciling", delay=1)


async def _reconcile_once(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, ensure: bool
) -> None:
    body = await kube.get(EXPERIMENTS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return  # gone: owner references let the garbage collector remove its Workflow
    try:
        exp = Experiment.model_validate(body)
        workflow = compile_experiment(exp, config.compile)
    except (ValidationError, CompileError) as error:
        await _invalid(kube, body, str(error))
        return
    wf_name = workflow["metadata"]["name"]
    wf = await kube.get(WORKFLOWS, namespace, wf_name)
    if wf is None and not needs_workflow(exp, wf_name):
        return  # finished and recorded; Argo's TTL removed the Workflow since
    if wf is None and ensure:
        workflow["metadata"]["namespace"] = namespace
        kopf.append_owner_reference(workflow, owner=kopf.Body(body))
        wf, created = await kube.ensure(WORKFLOWS, workflow)
        if created:
            kopf.info(body, reason="WorkflowCreated", message=f"created workflow {wf_name}")
    wf_status = (wf or {}).get("status")
    status = experiment_rules.experiment_status(
        exp, wf_name, wf_status, _now(), search_progress(wf_status)
    )
    if status.phase == "Succeeded" and not status.model_name:
        manifest = experiment_rules.registered_model(wf_status or {})
        try:
            if manifest is None:
                raise SpecError("register step", ["the register step produced no model"])
            status.model_name = await register_model(kube, config, exp, manifest)
        except SpecError as error:
            status.message = f"cannot register the model: {error}"
    await _report(kube, body, exp.status, status)


async def _invalid(kube: Kube, body: Obj, message: str) -> None:
    """A spec the api or the compiler refuses: permanent until the spec changes."""
    stub = Experiment.model_construct(
        metadata=ObjectMeta.model_validate(body["metadata"]),
        status=ExperimentStatus.model_validate(body.get("status") or {}),
    )
    status = experiment_rules.invalid_spec_status(stub, message, _now())
    if await kube.replace_status(EXPERIMENTS, body, status.wire()) is not None:
        kopf.warn(body, reason="InvalidSpec", message=message)


async def _report(
    kube: Kube, body: Obj, before: ExperimentStatus | None, status: ExperimentStatus
) -> None:
    if await kube.replace_status(EXPERIMENTS, body, status.wire()) is None:
        return
    was = before.phase if before and before.workflow_name == status.workflow_name else None
    if status.phase == was and status.model_name == (before.model_name if before else None):
        return
    if status.phase == "Running":
        kopf.info(body, reason="Training", message=f"workflow {status.workflow_name} is running")
    elif status.phase == "Failed":
        kopf.warn(body, reason="WorkflowFailed", message=status.message or "workflow failed")
    elif status.phase == "Succeeded" and status.model_name:
        kopf.info(body, reason="ModelRegistered", message=f"registered model {status.model_name}")
    elif status.phase == "Succeeded":
        kopf.warn(body, reason="RegistrationFailed", message=status.message or "no model")


async def register_model(kube: Kube, config: OperatorConfig, exp: Experiment, manifest: Obj) -> str:
    """Create (or, after a retrain, replace) the Model the register step produced, with its
    evidence in status and the Experiment's author as owner, then gate it."""
    model = experiment_rules.model_to_register(exp, manifest)
    namespace = exp.metadata.namespace or "default"
    doc = model.wire()
    evidence = doc.pop("status", {})
    meta = {k: v for k, v in doc["metadata"].items() if k in ("name", "labels", "annotations")}
    meta["namespace"] = namespace
    meta["labels"] = {
        **meta.get("labels", {}),
        **MANAGED,
        "aiml024.io/experiment": exp.metadata.name,
    }
    doc["metadata"] = meta
    name = meta["name"]
    existing, _ = await kube.ensure(MODELS, doc)
    if existing["spec"].get("source") != doc["spec"]["source"]:
        # A retrained version under the same name: it starts again from staging, and earlier
        # approvals no longer count (they name the old artifact's digest).
        spec = {
            "source": merge_diff(existing["spec"]["source"], doc["spec"]["source"]),
            "stage": "staging",
            "owner": model.spec.owner,
        }
        existing = await kube.merge_patch(MODELS, namespace, name, {"spec": spec})
    if (existing.get("status") or {}).get("sha256") != evidence.get("sha256"):
        await kube.replace_status(MODELS, existing, evidence)
    await model_handlers.reconcile(kube, config, namespace, name)
    return name
