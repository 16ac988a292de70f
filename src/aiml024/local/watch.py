"""What the embedded control plane does between applies, for each Deployment: what the
operator's timers and the monitors' CronWorkflows do in a cluster, with the same decisions.

- Rollouts (aiml024.reconcile.rollout): the SLO window is the model server's own metrics
  between two looks (reconcile.slo.observed_between over scrapes of its metrics port, the
  previous one kept beside the server's record); an A/B test reads the outcomes clients fed
  back and the request log; when the plan a rollout asks for differs from what serves, the
  model server is started again with it (one machine has no Seldon to move traffic).
- Drift monitors (aiml024.runtime.monitor, the CronWorkflow's entry point in a cluster): due
  by their cron schedule (or forced by `aiml024 monitor run`); each report goes to the store,
  the Deployment's status, an event, the webhook; a drifted monitor with `action: retrain`
  reruns its Experiment on the fresh data (reconcile.retrain decides) and the new Model
  version rolls out as a canary once the gate allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from croniter import croniter

from .. import audit
from ..api import Deployment, DeploymentStatus, Experiment, Model
from ..api.common import APPLIED_BY, DEFAULT_NAMESPACE
from ..api.deployment import AbResult, Monitor, RolloutStatus
from ..api.monitoring import DriftReport, monitor_root
from ..reconcile import clock
from ..reconcile import deployment as deployment_rules
from ..reconcile import retrain as retrain_rules
from ..reconcile import rollout as rollout_rules
from ..reconcile import slo as slo_rules
from ..servinglog import read_records

if TYPE_CHECKING:
    from .controlplane import LocalControlPlane

SCRAPE_TIMEOUT_S = 5.0


@dataclass
class WatchReport:
    """What one look at one Deployment did (for the CLI)."""

    deployment: str
    messages: list[str] = field(default_factory=list)
    reports: list[DriftReport] = field(default_factory=list)


def log_root(plane: LocalControlPlane, name: str) -> str:
    """Where the Deployment's servers log requests and its monitors write reports."""
    return monitor_root(plane.artifacts.as_uri(), DEFAULT_NAMESPACE, name)


def needs_watching(dep: Deployment) -> bool:
    """Monitors to run, or a rollout that is still moving."""
    rollout = dep.status.rollout if dep.status else None
    moving = rollout is not None and rollout.phase in rollout_rules.ACTIVE
    return bool(dep.spec.monitors) or moving or dep.spec.strategy.type != "single"


def watch(
    plane: LocalControlPlane,
    name: str,
    now: datetime,
    force_monitors: bool = False,
    say: Callable[[str], None] = lambda _text: None,
) -> WatchReport:
    """One look at Deployment `name`: due monitors (all with `force_monitors`), then its
    rollout. The caller holds the store."""
    report = WatchReport(name)

    def tell(text: str) -> None:
        report.messages.append(text)
        say(text)

    dep = _deployment(plane, name)
    if dep.status is None or dep.status.phase != "Serving":
        tell(f"deployment {name} is not serving")
        return report
    for monitor in dep.spec.monitors:
        if force_monitors or _due(dep, monitor, now):
            drift = _run_monitor(plane, name, monitor, now, tell)
            if drift is not None:
                report.reports.append(drift)
                # A retrain may have taken minutes: a rollout it starts starts now.
                now = max(now, clock.now())
    _advance_rollout(plane, name, now, tell)
    return report


def _deployment(plane: LocalControlPlane, name: str) -> Deployment:
    return Deployment.model_validate(plane.store.get("Deployment", name))


def _models(plane: LocalControlPlane) -> dict[str, Model]:
    return {m["metadata"]["name"]: Model.model_validate(m) for m in plane.store.list("Model")}


# -- monitors -----------------------------------------------------------------------------------


def _due(dep: Deployment, monitor: Monitor, now: datetime) -> bool:
    """Whether the monitor's schedule fired since its last run (or since serving began)."""
    previous = retrain_rules.previous_status(dep, monitor.name)
    ready = dep.status.condition("Ready") if dep.status else None
    since = previous.last_run if previous else (ready.last_transition_time if ready else None)
    if since is None:
        return True
    upcoming: datetime = croniter(monitor.schedule, since).get_next(datetime)
    return upcoming <= now


def _run_monitor(
    plane: LocalControlPlane,
    name: str,
    monitor: Monitor,
    now: datetime,
    tell: Callable[[str], None],
) -> DriftReport | None:
    # The monitor's statistics need pandas and scipy: imported only when one runs.
    from ..runtime import monitor as drift

    dep = _deployment(plane, name)
    models = _models(plane)
    rollout = dep.status.rollout if dep.status else None
    try:
        plan = deployment_rules.plan_predictors(dep, models, rollout=rollout)
    except deployment_rules.NotServable as why:
        tell(f"monitor {monitor.name}: {why}")
        return None
    stable = plan.stable.model
    root = log_root(plane, name)
    report = drift.run_monitor(
        monitor,
        deployment=name,
        namespace=DEFAULT_NAMESPACE,
        model=stable.name,
        sha256=stable.sha256 or "",
        bundle_dir=_local_path(stable.artifact_uri),
        root=root,
        since=drift.last_until(root, monitor.name),
        until=now,
    )
    problem = None
    if report.drifted and monitor.webhook:
        problem = drift.post_alert(monitor.webhook, report)
        if problem:
            report.message = f"{report.message}; alert not delivered: {problem}".strip("; ")
    uri = drift.write_report(root, report)
    tell(f"monitor {monitor.name}: {_verdict(report)}")
    if report.drifted:
        drifted = ", ".join(f"{f.feature} {f.score:.3g}" for f in report.features if f.drifted)
        plane.store.record_event(
            dep.wire(),
            "Warning",
            "DriftDetected",
            f"monitor {monitor.name} ({report.method} > {monitor.threshold:g}): {drifted}",
        )
    if problem:
        plane.store.record_event(dep.wire(), "Warning", "AlertFailed", problem)
    generation = _retrain(plane, dep, monitor, report, tell)
    _record_monitor(plane, name, monitor, report, now, uri, generation)
    if generation is not None:
        plane.retrain(monitor.retrain.experiment if monitor.retrain else "", tell)
    return report


def _verdict(report: DriftReport) -> str:
    if report.score is None:
        return f"no verdict ({report.rows} rows; {report.message})"
    state = "drift" if report.drifted else "no drift"
    return f"{state}: {report.method} {report.score:.3g} over {report.rows} rows"


def _retrain(
    plane: LocalControlPlane,
    dep: Deployment,
    monitor: Monitor,
    report: DriftReport,
    tell: Callable[[str], None],
) -> int | None:
    """Patch the Experiment when the retrain rule says so; the generation it made, or None."""
    if monitor.action != "retrain" or monitor.retrain is None or not report.drifted:
        return None
    manifest = plane.store.find("Experiment", monitor.retrain.experiment)
    if manifest is None:
        tell(f"monitor {monitor.name}: experiment {monitor.retrain.experiment} not found")
        plane.store.record_event(
            dep.wire(),
            "Warning",
            "RetrainFailed",
            f"experiment {monitor.retrain.experiment} not found",
        )
        return None
    patch, why = retrain_rules.retrain_decision(
        dep, monitor, report, Experiment.model_validate(manifest)
    )
    tell(f"monitor {monitor.name}: {why}")
    if patch is None:
        return None
    manifest["spec"]["data"] = {**manifest["spec"].get("data", {}), **patch["spec"]["data"]}
    manifest.pop("status", None)
    # Whoever wrote the retrain instruction chose the new training data: they author the
    # retrained Model (four eyes: they cannot approve it), as the operator records it.
    annotations = manifest["metadata"].setdefault("annotations", {})
    author = dep.metadata.annotations.get(APPLIED_BY) or annotations.get(APPLIED_BY)
    if author:
        annotations[APPLIED_BY] = author
    saved, _ = plane.store.apply(manifest)
    generation = int(saved["metadata"]["generation"])
    plane.store.record_event(dep.wire(), "Normal", "Retraining", why)
    plane.store.record_event(saved, "Normal", "Retraining", f"{why} (generation {generation})")
    record = audit.retrain_record(
        audit.subject_of(dep.wire()),
        monitor.name,
        monitor.retrain.experiment,
        generation,
        monitor.retrain.data_uri,
        [f.feature for f in report.features if f.drifted],
        plane.user,
    )
    audit.record(
        plane.home.as_uri(),
        [record],
        mirror=lambda entry: plane.store.record_event(dep.wire(), *audit.event(entry)),
    )
    return generation


def _record_monitor(
    plane: LocalControlPlane,
    name: str,
    monitor: Monitor,
    report: DriftReport,
    now: datetime,
    uri: str,
    generation: int | None,
) -> None:
    dep = _deployment(plane, name)
    status = (dep.status or DeploymentStatus()).model_copy(deep=True)
    previous = retrain_rules.previous_status(dep, monitor.name)
    alerted = retrain_rules.alerted(monitor, report)
    current = retrain_rules.monitor_status_after(previous, report, now, alerted, generation, uri)
    status.monitors = [s for s in status.monitors if s.name != monitor.name] + [current]
    if report.score is not None:
        status.drift = retrain_rules.drift_summary([report])
    plane.set_status(dep, status)


# -- rollouts -----------------------------------------------------------------------------------


def _advance_rollout(
    plane: LocalControlPlane, name: str, now: datetime, tell: Callable[[str], None]
) -> None:
    dep = _deployment(plane, name)
    models = _models(plane)
    experiments = {
        e["metadata"]["name"]: Experiment.model_validate(e) for e in plane.store.list("Experiment")
    }
    status = dep.status or DeploymentStatus()
    candidate = rollout_rules.retrain_candidate(dep, experiments)
    rollout = rollout_rules.rollout_for(dep, models, status.rollout, now, candidate)
    observed = _observe(plane, name)
    events: list[rollout_rules.RolloutEvent] = []
    if rollout is not None and rollout.phase == "Progressing":
        ab = _ab_result(plane, dep, rollout) if rollout.strategy == "ab" else None
        after, events = rollout_rules.advance(dep, rollout, observed, now, ab)
        if after.weight == 100 and rollout.weight < 100 and not _allowed_alone(
            plane, dep, models, rollout
        ):
            after, events = rollout_rules.advance(dep, rollout, observed, now, ab, False)
        rollout = after
    before = status.model_copy(deep=True)
    status = rollout_rules.status_after_rollout(dep, status, rollout, events, observed, now)
    if status != before:
        plane.set_status(dep, status)
    for event in events:
        plane.store.record_event(
            dep.wire(), "Warning" if event.warning else "Normal", event.reason, event.message
        )
        tell(event.message)
    _audit_rollout(plane, dep, before, events)
    if rollout is not None and before.rollout != rollout:
        tell(f"rollout of {rollout.candidate}: {rollout.phase}, {rollout.message}")
    # Serve what the plan now asks for (a new step's weights, a promotion, a rollback).
    plane.serve(name, say=tell)


def _audit_rollout(
    plane: LocalControlPlane,
    dep: Deployment,
    before: DeploymentStatus,
    events: list[rollout_rules.RolloutEvent],
) -> None:
    after = _deployment(plane, dep.metadata.name).status or DeploymentStatus()
    records = []
    for event in events:
        if event.reason == slo_rules.ROLLED_BACK:
            records.append(
                audit.rollback_record(
                    audit.subject_of(dep.wire()),
                    event.cause or event.message,
                    before.traffic,
                    after.traffic,
                    before.models,
                    plane.user,
                )  # fmt: skip
            )
        elif event.reason in ("Promoted", "Concluded") and after.rollout is not None:
            records.append(
                audit.rollout_record(
                    audit.subject_of(dep.wire()),
                    event.reason,
                    after.rollout.candidate,
                    event.message,
                    before.traffic,
                    after.traffic,
                    before.models,
                    plane.user,
                )  # fmt: skip
            )
    if records:
        audit.record(
            plane.home.as_uri(),
            records,
            mirror=lambda entry: plane.store.record_event(dep.wire(), *audit.event(entry)),
        )


def _allowed_alone(
    plane: LocalControlPlane, dep: Deployment, models: dict[str, Model], rollout: RolloutStatus
) -> bool:
    """Whether the deployment policy allows the candidate serving alone (promoted)."""
    promoted = rollout.model_copy(update={"phase": "Promoted"})
    return plane.deployment_gate(dep, models, promoted).decision == "allow"


def _ab_result(
    plane: LocalControlPlane, dep: Deployment, rollout: RolloutStatus
) -> AbResult | None:
    ab = dep.spec.strategy.ab
    if ab is None:
        return None
    root = log_root(plane, dep.metadata.name)
    since = rollout.step_started_at
    requests = read_records(root, "requests", since)
    feedback = read_records(root, "feedback", since)
    a, b = rollout_rules.ab_outcomes(requests, feedback)
    return rollout_rules.ab_test(
        a, b, ab.alpha, ab.min_samples, ab.max_samples, previous=rollout.ab
    )


def _observe(plane: LocalControlPlane, name: str) -> dict[str, slo_rules.Observation]:
    """Role -> what it served since the previous look (the model server's own counters)."""
    info = plane.server_info(name)
    if info is None:
        return {}
    try:
        text = httpx.get(
            f"http://127.0.0.1:{info.metrics_port}/metrics", timeout=SCRAPE_TIMEOUT_S
        ).text
    except httpx.HTTPError:
        return {}
    previous_file = Path(info.workdir) / "metrics.prom"
    previous = previous_file.read_text() if previous_file.exists() else ""
    previous_file.write_text(text)
    before = slo_rules.runtime_metrics(previous, name)
    return slo_rules.observed_between(before, slo_rules.runtime_metrics(text, name))


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))
