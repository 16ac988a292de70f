"""Experiment: ensure this generation's Workflow, mirror its progress, register the Model.

Level-triggered: every call reads the Experiment and its Workflow afresh, decides with
aiml024.reconcile.experiment, acts idempotently and writes the whole status only if the
Experiment has not changed since it was read (a stale write conflicts and is redone).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import fsspec
import kopf
from pydantic import ValidationError

from ..api import Experiment, ExperimentStatus, Model, ObjectMeta, SpecError
from ..api.common import DEFAULT_NAMESPACE
from ..compiler import CompileError, cluster_data_problem, compile_experiment
from ..compiler.options import MANAGED_BY
from ..reconcile import experiment as experiment_rules
from ..reconcile.clock import now as _now
from ..reconcile.workflow import needs_workflow, search_progress
from . import model as model_handlers
from .config import OperatorConfig
from .kube import EXPERIMENTS, MODELS, WORKFLOWS, Kube, controlled_by, settle

Obj = dict[str, Any]
log = logging.getLogger(__name__)


async def reconcile(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, ensure: bool = True
) -> None:
    """`ensure`: create the Workflow when missing (the Experiment's own handlers); the Workflow
    watcher only mirrors, so a stale Workflow event cannot resurrect anything."""
    await settle(
        f"experiment {name}", lambda: _reconcile_once(kube, config, namespace, name, ensure)
    )


def compile_for_cluster(exp: Experiment, config: OperatorConfig) -> Obj:
    """The Workflow for `exp`, refusing data the steps may not read in this cluster."""
    workflow = compile_experiment(exp, config.compile)
    problem = cluster_data_problem(exp, config.compile)
    if problem:
        raise CompileError(problem)
    return workflow


async def _reconcile_once(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, ensure: bool
) -> None:
    body = await kube.get(EXPERIMENTS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return  # gone: owner references let the garbage collector remove its Workflow
    try:
        exp = Experiment.model_validate(body)
        workflow = compile_for_cluster(exp, config)
    except (ValidationError, CompileError) as error:
        await _invalid(kube, body, str(error))
        return
    wf_name = workflow["metadata"]["name"]
    wf = await kube.get(WORKFLOWS, namespace, wf_name)
    if wf is not None and not controlled_by(wf, body):
        await _not_owned(kube, config, body, exp, wf_name, ensure)
        return
    if wf is None and not needs_workflow(exp, wf_name):
        return  # finished and recorded; Argo's TTL removed the Workflow since
    if wf is None and ensure:
        workflow["metadata"]["namespace"] = namespace
        kopf.append_owner_reference(workflow, owner=kopf.Body(body))
        wf, created = await kube.ensure(WORKFLOWS, workflow)
        if created:
            kopf.info(body, reason="WorkflowCreated", message=f"created workflow {wf_name}")
        elif not controlled_by(wf, body):  # someone created it between our read and our create
            await _not_owned(kube, config, body, exp, wf_name, ensure)
            return
    # Only the phase and progress are read from the Workflow (editors can write its status);
    # what the run produced is read from the run's own path in the artifact store.
    wf_status = (wf or {}).get("status")
    status = experiment_rules.experiment_status(
        exp, wf_name, wf_status, _now(), search_progress(wf_status)
    )
    if status.phase == "Succeeded" and not status.model_name:
        try:
            status.model_name = await register_model(kube, config, exp, wf_name)
        except SpecError as error:
            status.message = f"cannot register the model: {error}"
    await _report(kube, body, exp.status, status)


async def _not_owned(
    kube: Kube, config: OperatorConfig, body: Obj, exp: Experiment, wf_name: str, ensure: bool
) -> None:
    """A Workflow of this name that the Experiment does not own: never adopted, reported, and
    looked at again later (it may be a previous Experiment's, not yet garbage-collected)."""
    message = (
        f"workflow {wf_name} exists but was not created for this Experiment (no owner "
        f"reference to uid {exp.metadata.uid}); it is ignored: delete it to train"
    )
    status = experiment_rules.not_owned_status(exp, wf_name, message, _now())
    if await kube.replace_status(EXPERIMENTS, body, status.wire()) is not None:
        kopf.warn(body, reason="WorkflowNotOwned", message=message)
    if ensure:
        raise kopf.TemporaryError(message, delay=config.retry_delay)


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


async def register_model(kube: Kube, config: OperatorConfig, exp: Experiment, wf_name: str) -> str:
    """Create this generation's Model version from the register step's record in the
    artifact store, with its evidence in status and the Experiment's author as owner, then
    gate it. A version is created once and never replaced."""
    store = config.compile.artifact_store
    uri = experiment_rules.registration_uri(store, exp, wf_name)
    record = await asyncio.to_thread(_read_record, uri)
    model = experiment_rules.model_to_register(exp, record, store, wf_name)
    namespace = exp.metadata.namespace or DEFAULT_NAMESPACE
    doc = model.wire()
    evidence = doc.pop("status", {})
    doc["metadata"]["namespace"] = namespace
    doc["metadata"]["labels"] = {**doc["metadata"].get("labels", {}), **MANAGED_BY}
    name = doc["metadata"]["name"]
    existing, created = await kube.ensure(MODELS, doc)
    if not created:
        conflict = experiment_rules.registration_conflict(Model.model_validate(existing), model)
        if conflict:
            raise SpecError("register", [conflict])
    if not (existing.get("status") or {}).get("sha256"):
        await kube.replace_status(MODELS, existing, evidence)
    await model_handlers.reconcile(kube, config, namespace, name)
    return name


def _read_record(uri: str) -> Obj:
    try:
        with fsspec.open(uri, "rb") as handle:
            record: Obj = json.load(handle)
    except FileNotFoundError:
        raise SpecError(
            "register", [f"no registration record at {uri}: the run registered nothing"]
        ) from None
    except (OSError, ValueError) as error:
        raise SpecError(
            "register", [f"cannot read the registration record {uri}: {error}"]
        ) from None
    return record
