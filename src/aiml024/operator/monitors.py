"""Drift monitors in a cluster: the CronWorkflows (compiled with the Deployment) write the
reports; this timer reads the newest one per monitor back from the store and acts on it.

For each Deployment with drift monitors, every `monitor_interval()` seconds: the newest report
of each monitor under `api.monitoring.monitor_root(<artifact store>, namespace, deployment)`,
then `status.monitors` and `status.drift` (aiml024.reconcile.retrain), a `DriftDetected`
warning Event for each new drifted report, and for `action: retrain` the merge patch
`retrain_patch` decides on the Experiment, with a `Retraining` Event and a `retrain` audit
entry. The patch also names the Experiment's author (`retrain_author`: the Deployment's, who
wrote the retrain instruction and so chose the new data), so the retrained Model is theirs and
four eyes holds against them. The new generation's Model rolls out as the rollout engine
decides.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from .. import audit
from ..api import Deployment, DeploymentStatus, Experiment
from ..api.common import APPLIED_BY, DEFAULT_NAMESPACE
from ..api.deployment import Monitor, MonitorStatus
from ..api.monitoring import DriftReport, monitor_root
from ..reconcile import retrain as rules
from ..reconcile.clock import now as _now
from ..servinglog import newest_report
from .config import OperatorConfig
from .kube import CONFLICT_ATTEMPTS, DEPLOYMENTS, EXPERIMENTS, Conflict, Kube
from .model import record_audit

log = logging.getLogger(__name__)


def monitor_interval() -> float:
    """Seconds between reads of the drift reports ($AIML024_MONITOR_INTERVAL, default 60)."""
    value = os.environ.get("AIML024_MONITOR_INTERVAL")
    return float(value) if value else 60.0


def newest_reports(root: str, monitors: list[str]) -> dict[str, tuple[str, DriftReport]]:
    found = {}
    for name in monitors:
        newest = newest_report(root, name)
        if newest is not None:
            found[name] = newest
    return found


def retrain_author(dep: Deployment, experiment: Experiment, operator_user: str) -> str | None:
    """Who authors the retrained Model: whoever wrote the retrain instruction, i.e. the
    Deployment's author (its `aiml024.io/applied-by`, stamped by the admission webhook), for
    they chose the data it learns from; for a Deployment stamped before that webhook, the
    Experiment's previous author. Never the operator: four eyes needs a person there."""
    for candidate in (
        dep.metadata.annotations.get(APPLIED_BY),
        experiment.metadata.annotations.get(APPLIED_BY),
    ):
        if candidate and candidate != operator_user:
            return candidate
    return None


def authored_retrain_patch(
    patch: dict[str, Any], dep: Deployment, experiment: Experiment, operator_user: str
) -> dict[str, Any]:
    """The retrain's merge patch with the Experiment's author set to `retrain_author` (the
    webhook takes an author from the operator's own requests only)."""
    author = retrain_author(dep, experiment, operator_user)
    if author is None:
        return patch
    return {**patch, "metadata": {"annotations": {APPLIED_BY: author}}}


async def check_monitors(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    """Read the monitors' newest reports, write them into status, act on new drift."""
    retrained: dict[str, int | None] = {}  # kept across conflict retries: patch once
    for _attempt in range(CONFLICT_ATTEMPTS):
        try:
            await _check_once(kube, config, namespace, name, retrained)
            return
        except Conflict:
            continue  # status changed while deciding: read again (the patch is not repeated)


async def _check_once(
    kube: Kube,
    config: OperatorConfig,
    namespace: str,
    name: str,
    retrained: dict[str, int | None],
) -> None:
    body = await kube.get(DEPLOYMENTS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    dep = Deployment.model_validate(body)
    monitors = [m for m in dep.spec.monitors if m.type == "drift"]
    if not monitors:
        return
    root = monitor_root(config.compile.artifact_store, namespace or DEFAULT_NAMESPACE, name)
    try:
        reports = await asyncio.to_thread(newest_reports, root, [m.name for m in monitors])
    except Exception as error:  # store unreachable or a report unreadable: try next tick
        log.warning("drift reports of deployment %s under %s: %s", name, root, error)
        return
    now = _now()
    statuses: list[MonitorStatus] = []
    for monitor in monitors:
        previous = rules.previous_status(dep, monitor.name)
        if monitor.name not in reports:
            if previous is not None:
                statuses.append(previous)
            continue
        uri, report = reports[monitor.name]
        fresh = previous is None or report.until > previous.last_run
        if fresh and report.drifted and monitor.name not in retrained:
            kopf.warn(
                body, reason="DriftDetected", message=f"monitor {monitor.name}: {report.message}"
            )
        generation = None
        if monitor.name in retrained:
            generation = retrained[monitor.name]
        elif fresh and monitor.action == "retrain":
            generation = await _retrain(kube, config, body, dep, monitor, report)
            if generation is not None:
                retrained[monitor.name] = generation
        statuses.append(
            rules.monitor_status_after(
                previous, report, now, rules.alerted(monitor, report), generation, uri
            )
        )
    status = (dep.status or DeploymentStatus()).model_copy(deep=True)
    status.monitors = statuses
    status.drift = rules.drift_summary(report for _, report in reports.values())
    await kube.replace_status(DEPLOYMENTS, body, status.wire())


async def _retrain(
    kube: Kube,
    config: OperatorConfig,
    body: dict[str, Any],
    dep: Deployment,
    monitor: Monitor,
    report: DriftReport,
) -> int | None:
    """Patch the Experiment when the rule says so; the generation it made, or None."""
    assert monitor.retrain is not None
    namespace = dep.metadata.namespace or DEFAULT_NAMESPACE
    found = await kube.get(EXPERIMENTS, namespace, monitor.retrain.experiment)
    if found is None:
        kopf.warn(
            body,
            reason="RetrainFailed",
            message=f"monitor {monitor.name}: no experiment {monitor.retrain.experiment}",
        )
        return None
    experiment = Experiment.model_validate(found)
    patch, why = rules.retrain_decision(dep, monitor, report, experiment)
    if patch is None:
        if report.drifted:
            log.info(
                "deployment %s monitor %s: no retrain: %s", dep.metadata.name, monitor.name, why
            )
        return None
    patch = authored_retrain_patch(patch, dep, experiment, config.operator_user)
    patched = await kube.merge_patch(EXPERIMENTS, namespace, monitor.retrain.experiment, patch)
    generation = int(patched["metadata"]["generation"])
    kopf.info(body, reason="Retraining", message=f"monitor {monitor.name}: {why}")
    record = audit.retrain_record(
        audit.subject_of(body),
        monitor.name,
        monitor.retrain.experiment,
        generation,
        monitor.retrain.data_uri,
        [f.feature for f in report.features if f.drifted],
        config.operator_user,
    )
    await record_audit(config, body, [record])
    return generation
