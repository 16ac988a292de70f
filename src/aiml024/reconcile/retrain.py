"""Decisions on a drift monitor's reports, shared by the embedded control plane and the
operator: what the Deployment's status says about its monitors, and whether a drifted report
starts a retrain. Pure: the caller reads the reports and the Experiment, applies the patch and
supplies the clock.

The retrain rule (idempotent: the same report, read again, never starts a second run):

A monitor with `action: retrain` patches its Experiment's spec (`spec.data.uri` =
`retrain.dataUri`, a merge patch), which makes the Experiment's next generation train on the
fresh data; its Model then rolls out as the rollout engine decides. The caller records the
generation the patch produced in `MonitorStatus.retrainedGeneration`. No patch (None) when:

1. the report has no verdict or did not drift, or the monitor's action is not retrain;
2. the report is not newer than the one the monitor's status already records (`lastRun`):
   it was decided on already;
3. a retrain of this monitor is running: the Experiment's generation is still
   `retrainedGeneration` and that generation has not finished (`status.observedGeneration`
   is behind it, or its phase is Pending or Running);
4. the Experiment already trains on `retrain.dataUri`: either this monitor's retrain made
   that generation (`retrainedGeneration` is the Experiment's generation: that drift was acted
   on, and its Model is the answer), or someone set it. Either way the patch would change
   nothing, so Kubernetes (and the embedded control plane) would start no new generation:
   retraining on the same URI again needs a new URI (a dated path), or a new generation made
   by hand;
5. a rollout of this Deployment is in progress (`status.rollout` Progressing or
   WaitingForApproval): one change at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..api import Deployment, Experiment
from ..api.deployment import Monitor, MonitorStatus
from ..api.monitoring import DriftReport

RUNNING_PHASES = ("Pending", "Running")
ROLLING_OUT = ("Progressing", "WaitingForApproval")


def previous_status(dep: Deployment, monitor: str) -> MonitorStatus | None:
    """The monitor's status as the Deployment records it, if any."""
    statuses = dep.status.monitors if dep.status else []
    return next((s for s in statuses if s.name == monitor), None)


def _training(exp: Experiment, generation: int) -> bool:
    """Whether the Experiment's `generation` has not finished training."""
    status = exp.status
    if status is None or (status.observed_generation or 0) < generation:
        return True
    return (status.phase or "Pending") in RUNNING_PHASES


def retrain_decision(
    dep: Deployment, monitor: Monitor, report: DriftReport, experiment: Experiment
) -> tuple[dict[str, Any] | None, str]:
    """(the merge patch to the Experiment, or None; why), under the rule in the module doc."""
    retrain = monitor.retrain
    if monitor.action != "retrain" or retrain is None:
        return None, f"monitor {monitor.name} alerts only"
    if report.score is None or not report.drifted:
        return None, f"monitor {monitor.name}: no drift"
    if experiment.metadata.name != retrain.experiment:
        return None, f"experiment {experiment.metadata.name} is not {retrain.experiment}"
    previous = previous_status(dep, monitor.name)
    if previous is not None and report.until <= previous.last_run:
        return None, f"report of {report.until.isoformat()} was decided on already"
    generation = experiment.metadata.generation or 1
    mine = previous is not None and previous.retrained_generation == generation
    if mine and _training(experiment, generation):
        return None, (
            f"retrain of experiment {retrain.experiment} (generation {generation}) is running"
        )
    if experiment.spec.data.uri == retrain.data_uri:
        who = "this monitor's retrain" if mine else "its spec"
        return None, (
            f"experiment {retrain.experiment} already trains on {retrain.data_uri} "
            f"(generation {generation}, by {who}); point retrain.dataUri at new data to retrain"
        )
    rollout = dep.status.rollout if dep.status else None
    if rollout is not None and rollout.phase in ROLLING_OUT:
        return None, f"a rollout of {rollout.candidate} is in progress"
    patch = {"spec": {"data": {"uri": retrain.data_uri}}}
    return patch, (
        f"drift on {', '.join(f.feature for f in report.features if f.drifted)}: "
        f"retraining experiment {retrain.experiment} on {retrain.data_uri}"
    )


def retrain_patch(
    dep: Deployment, monitor: Monitor, report: DriftReport, experiment: Experiment
) -> dict[str, Any] | None:
    """The merge patch to the Experiment that starts a retrain, or None (module doc)."""
    return retrain_decision(dep, monitor, report, experiment)[0]


def alerted(monitor: Monitor, report: DriftReport) -> bool:
    """Whether the monitor run that wrote `report` alerted: a drifted report and a webhook
    (the run posts it; a delivery failure is in the report's message)."""
    return report.drifted and monitor.webhook is not None


def monitor_status_after(
    previous: MonitorStatus | None,
    report: DriftReport,
    now: datetime,
    alerted: bool,
    retrained_generation: int | None,
    report_uri: str | None = None,
) -> MonitorStatus:
    """The monitor's status after its newest `report`: its verdict, when it last alerted and
    the generation its last retrain started (kept from `previous` unless given)."""
    last_alert = previous.last_alert if previous is not None else None
    if alerted and (previous is None or report.until > previous.last_run):
        last_alert = now
    if retrained_generation is None and previous is not None:
        retrained_generation = previous.retrained_generation
    if report_uri is None and previous is not None and previous.last_run == report.until:
        report_uri = previous.report_uri
    return MonitorStatus(
        name=report.monitor,
        last_run=report.until,
        rows=report.rows,
        score=report.score,
        drifted=report.drifted,
        report_uri=report_uri,
        last_alert=last_alert,
        retrained_generation=retrained_generation,
    )


def drift_summary(reports: Iterable[DriftReport]) -> dict[str, float]:
    """DeploymentStatus.drift: the latest score per feature (and `prediction`), the largest
    over the monitors' newest reports (one per monitor; reports with no verdict add nothing)."""
    newest: dict[str, DriftReport] = {}
    for report in reports:
        kept = newest.get(report.monitor)
        if kept is None or report.until > kept.until:
            newest[report.monitor] = report
    summary: dict[str, float] = {}
    for report in newest.values():
        if report.score is None:
            continue
        for feature in report.features:
            summary[feature.feature] = max(
                summary.get(feature.feature, feature.score), feature.score
            )
    return dict(sorted(summary.items()))
