"""The retraining decision and the monitors' status: pure functions of the Deployment, the
monitor, its report and the Experiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiml024.api import Deployment, Experiment
from aiml024.api.deployment import MonitorStatus, RolloutStatus
from aiml024.api.monitoring import DriftReport, FeatureDrift
from aiml024.reconcile.retrain import (
    alerted,
    drift_summary,
    monitor_status_after,
    retrain_decision,
    retrain_patch,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FRESH = "s3://data/churn/2026-03.parquet"
RETRAIN = {
    "name": "inputs",
    "action": "retrain",
    "retrain": {"experiment": "churn", "dataUri": FRESH},
}


def deployment(watch: list[dict[str, Any]] | None = None, **status: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "churn", "namespace": "ml", "generation": 1},
            "spec": {"model": "churn-model-v1", "monitors": watch or [RETRAIN]},
            "status": status or None,
        }
    )


def experiment(generation: int = 3, uri: str = "s3://data/churn/2026-01.parquet",
               phase: str | None = "Succeeded", observed: int | None = None) -> Experiment:  # fmt: skip
    return Experiment.model_validate(
        {
            "metadata": {"name": "churn", "namespace": "ml", "generation": generation},
            "spec": {"task": "classification", "data": {"uri": uri}, "target": "churned"},
            "status": {"phase": phase, "observedGeneration": observed or generation},
        }
    )


def report(until: datetime = T0, drifted: bool = True, score: float | None = 0.5,
           monitor: str = "inputs", features: dict[str, float] | None = None) -> DriftReport:  # fmt: skip
    scores = features if features is not None else {"tenure": score or 0.0, "prediction": 0.1}
    return DriftReport(
        deployment="churn", namespace="ml", monitor=monitor, model="churn-model-v1",
        sha256="ab" * 32, method="psi", threshold=0.2, until=until, rows=500, score=score,
        drifted=drifted,
        features=[FeatureDrift(feature=k, kind="numeric", statistic="psi", score=v,
                               drifted=v > 0.2) for k, v in scores.items()]
        if score is not None else [],
    )  # fmt: skip


def status(**fields: Any) -> dict[str, Any]:
    entry = {"name": "inputs", "lastRun": (T0 - timedelta(hours=1)).isoformat()} | fields
    return {"monitors": [entry]}


def test_a_drifted_report_patches_the_data_uri() -> None:
    dep = deployment()
    patch, why = retrain_decision(dep, dep.spec.monitors[0], report(), experiment())
    assert patch == {"spec": {"data": {"uri": FRESH}}}
    assert "tenure" in why and FRESH in why


def test_no_retrain_without_drift_or_verdict_or_action() -> None:
    dep, exp = deployment(), experiment()
    monitor = dep.spec.monitors[0]
    assert retrain_patch(dep, monitor, report(drifted=False, score=0.1), exp) is None
    assert retrain_patch(dep, monitor, report(drifted=False, score=None), exp) is None
    alerting = deployment([{"name": "inputs"}])
    assert retrain_patch(alerting, alerting.spec.monitors[0], report(), exp) is None


def test_a_report_already_decided_on_is_not_decided_again() -> None:
    dep = deployment(**status(lastRun=T0.isoformat()))
    assert retrain_patch(dep, dep.spec.monitors[0], report(until=T0), experiment()) is None


def test_a_running_retrain_is_not_started_again() -> None:
    dep = deployment(**status(retrainedGeneration=4))
    running = experiment(generation=4, uri=FRESH, phase="Running")
    patch, why = retrain_decision(dep, dep.spec.monitors[0], report(), running)
    assert patch is None and "is running" in why
    pending = experiment(generation=4, uri=FRESH, phase="Succeeded", observed=3)
    assert retrain_patch(dep, dep.spec.monitors[0], report(), pending) is None


def test_a_finished_retrain_on_the_same_data_is_not_repeated() -> None:
    dep = deployment(**status(retrainedGeneration=4))
    done = experiment(generation=4, uri=FRESH)
    patch, why = retrain_decision(dep, dep.spec.monitors[0], report(), done)
    assert patch is None and "this monitor's retrain" in why
    # Set by hand: a merge patch would change nothing, so no generation would start.
    hand = deployment()
    patch, why = retrain_decision(hand, hand.spec.monitors[0], report(), experiment(uri=FRESH))
    assert patch is None and "already trains on" in why


def test_a_new_generation_by_hand_lets_the_monitor_retrain_again() -> None:
    dep = deployment(**status(retrainedGeneration=4))
    moved_on = experiment(generation=5, uri="s3://data/churn/manual.parquet")
    assert retrain_patch(dep, dep.spec.monitors[0], report(), moved_on) == {
        "spec": {"data": {"uri": FRESH}}
    }


def test_no_retrain_while_a_rollout_is_in_progress() -> None:
    rollout = RolloutStatus(strategy="canary", candidate="churn-model-v2", source="retrain")
    dep = deployment(rollout=rollout.wire())
    patch, why = retrain_decision(dep, dep.spec.monitors[0], report(), experiment())
    assert patch is None and "rollout" in why
    done = rollout.model_copy(update={"phase": "Promoted"})
    dep = deployment(rollout=done.wire())
    assert retrain_patch(dep, dep.spec.monitors[0], report(), experiment()) is not None


def test_monitor_status_after_a_report() -> None:
    first = monitor_status_after(None, report(), T0, alerted=True, retrained_generation=4,
                                 report_uri="s3://x/drift/inputs/a.json")  # fmt: skip
    assert first == MonitorStatus(
        name="inputs", last_run=T0, rows=500, score=0.5, drifted=True,
        report_uri="s3://x/drift/inputs/a.json", last_alert=T0, retrained_generation=4,
    )  # fmt: skip
    later = T0 + timedelta(hours=1)
    quiet = monitor_status_after(first, report(until=later, drifted=False, score=0.1), later,
                                 alerted=False, retrained_generation=None)  # fmt: skip
    assert quiet.last_alert == T0 and quiet.retrained_generation == 4 and not quiet.drifted
    # The same report read again: no new alert time.
    again = monitor_status_after(first, report(), later, alerted=True, retrained_generation=None)
    assert again.last_alert == T0 and again.report_uri == first.report_uri


def test_alerted_needs_drift_and_a_webhook() -> None:
    dep = deployment([{"name": "inputs", "webhook": "https://hooks.example/x"}, {"name": "b"}])
    hooked, silent = dep.spec.monitors
    assert alerted(hooked, report()) and not alerted(hooked, report(drifted=False))
    assert not alerted(silent, report())


def test_drift_summary_takes_each_monitors_newest_and_the_largest_score() -> None:
    reports = [
        report(until=T0, features={"tenure": 0.9}),
        report(until=T0 + timedelta(hours=1), features={"tenure": 0.3, "prediction": 0.05}),
        report(until=T0, monitor="other", features={"tenure": 0.1, "plan": 0.4}),
        report(until=T0 + timedelta(hours=2), monitor="third", score=None, drifted=False),
    ]
    assert drift_summary(reports) == {"plan": 0.4, "prediction": 0.05, "tenure": 0.3}
    assert drift_summary([]) == {}
