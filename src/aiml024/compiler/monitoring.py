"""Deployment -> ServiceMonitor and PrometheusRule (Prometheus Operator, monitoring.coreos.com/v1).

Series used (Seldon Core v1's executor exports the first; aiml024's runtime the second):
- `seldon_api_executor_server_requests_seconds_{bucket,count}` with `deployment_name`,
  `predictor_name` and `code` labels: the latency and error-rate SLOs, per predictor so a
  breached canary can be rolled back alone.
- `aiml024_drift_score{deployment, method, feature}`: the newest drift report's scores, which
  the model servers export from `drift/latest.json`.

Each drift monitor also becomes an Argo CronWorkflow (`argoproj.io/v1alpha1`) that runs
`python -m aiml024.runtime.monitor` on the monitor's schedule (UTC) against the stable
predictor's Model (its artifact URI and digest from the predictor plan) and the Deployment's
`api.monitoring.monitor_root` in the artifact store (docs/CONTRACTS.md, "Drift monitors").
"""

from __future__ import annotations

from typing import Any

from aiml024.api import Deployment
from aiml024.api.common import DEFAULT_NAMESPACE
from aiml024.api.deployment import Monitor
from aiml024.api.monitoring import monitor_root
from aiml024.api.plan import PredictorPlan

from .options import CompileError, CompileOptions, canonical_json, child_name

SERVER_METRIC = "seldon_api_executor_server_requests_seconds"
DRIFT_METRIC = "aiml024_drift_score"
WINDOW = "5m"
FOR = "5m"
MONITOR_COMMAND = ["python", "-m", "aiml024.runtime.monitor"]
# CronWorkflow names leave room for the timestamp suffix Argo gives each run's Workflow.
CRON_NAME_LIMIT = 52
# A run missed by more than this (controller down) is skipped, not made up for.
STARTING_DEADLINE_SECONDS = 300
MONITOR_DEADLINE_SECONDS = 1800


def _number(value: float) -> str:
    """PromQL literal without float noise: 150.0 -> 150, 0.01 -> 0.01."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _metadata(dep: Deployment, name: str, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if dep.metadata.namespace:
        metadata["namespace"] = dep.metadata.namespace
    metadata["labels"] = dict(labels)
    return metadata


def _selector(dep: Deployment, extra: str = "", label: str = "deployment_name") -> str:
    """PromQL matchers for `dep`'s series: its name under `label` (Seldon's executor says
    deployment_name, aiml024's runtime deployment) and its namespace."""
    matchers = [f'{label}="{dep.metadata.name}"']
    if dep.metadata.namespace:
        matchers.append(f'namespace="{dep.metadata.namespace}"')
    if extra:
        matchers.append(extra)
    return "{" + ",".join(matchers) + "}"


def _rate(dep: Deployment, series: str, extra: str = "") -> str:
    return f"rate({SERVER_METRIC}_{series}{_selector(dep, extra)}[{WINDOW}])"


def service_monitor(dep: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(dep, dep.metadata.name, labels),
        "spec": {
            # Seldon labels every predictor Service with its SeldonDeployment's name.
            "selector": {"matchLabels": {"seldon-deployment-id": dep.metadata.name}},
            "endpoints": [{"port": "http", "path": "/prometheus", "interval": "30s"}],
        },
    }


def _alert(
    name: str, expr: str, severity: str, summary: str, extra: dict[str, str]
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": FOR,
        "labels": {"severity": severity, **extra},
        "annotations": {"summary": summary},
    }


def prometheus_rule(dep: Deployment, labels: dict[str, str]) -> dict[str, Any]:
    name = dep.metadata.name
    slo = dep.spec.slo
    common = {"deployment": name, "rollback": str(slo.rollback).lower()}
    latency = (
        "histogram_quantile(0.95, sum by (le, predictor_name) "
        f"({_rate(dep, 'bucket')})) * 1000 > {_number(slo.latency_p95_ms)}"
    )
    server_errors = _rate(dep, "count", 'code=~"5.."')
    errors = (
        f"sum by (predictor_name) ({server_errors}) / "
        f"sum by (predictor_name) ({_rate(dep, 'count')}) > {_number(slo.error_rate)}"
    )
    rules = [
        _alert(
            "Aiml024LatencySLOBreached",
            latency,
            "critical",
            f"{name}: p95 latency of predictor {{{{ $labels.predictor_name }}}} is above "
            f"{_number(slo.latency_p95_ms)} ms",
            common,
        ),
        _alert(
            "Aiml024ErrorRateSLOBreached",
            errors,
            "critical",
            f"{name}: error rate of predictor {{{{ $labels.predictor_name }}}} is above "
            f"{_number(slo.error_rate)}",
            common,
        ),
    ]
    groups = [{"name": f"aiml024-{name}-slo", "rules": rules}]
    drift = [m for m in dep.spec.monitors if m.type == "drift"]
    if drift:
        groups.append(
            {
                "name": f"aiml024-{name}-drift",
                "rules": [
                    _alert(
                        "Aiml024DriftDetected",
                        DRIFT_METRIC
                        + _selector(dep, 'method="' + m.method + '"', "deployment")
                        + f" > {_number(m.threshold)}",
                        "warning",
                        f"{name}: {m.method} drift above {_number(m.threshold)}",
                        {"deployment": name, "action": m.action},
                    )
                    for m in drift
                ],
            }
        )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(dep, f"{name}-slo", labels),
        "spec": {"groups": groups},
    }


def cron_workflow_name(dep: Deployment, monitor: Monitor) -> str:
    return child_name(dep.metadata.name, f"-{monitor.name}-drift", CRON_NAME_LIMIT)


def drift_cron_workflow(
    dep: Deployment,
    monitor: Monitor,
    labels: dict[str, str],
    plan: PredictorPlan,
    options: CompileOptions,
) -> dict[str, Any]:
    """The CronWorkflow that runs one drift monitor against the plan's stable Model."""
    namespace = dep.metadata.namespace or DEFAULT_NAMESPACE
    stable = plan.stable.model
    args = {
        "deployment": dep.metadata.name,
        "namespace": namespace,
        "monitor": canonical_json(monitor.wire()),
        "model": stable.name,
        "sha256": stable.sha256 or "",
        "model-uri": stable.artifact_uri,
        "root": monitor_root(options.artifact_store, namespace, dep.metadata.name),
    }
    if "{{" in args["monitor"]:
        # Argo would substitute it in a step that runs as aiml024-runtime.
        raise CompileError(
            f"spec.monitors[{monitor.name}]: '{{{{' is Argo template syntax; it may not appear "
            "in a monitor's fields"
        )
    container: dict[str, Any] = {"image": options.image}
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    container |= {
        "command": list(MONITOR_COMMAND),
        "args": [item for key, value in args.items() for item in (f"--{key}", value)],
        "resources": {
            "requests": {"cpu": "250m", "memory": options.serving_memory},
            "limits": {"memory": options.serving_memory},
        },
    }
    pod_labels = {**labels, "aiml024.io/monitor": monitor.name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": _metadata(dep, cron_workflow_name(dep, monitor), pod_labels),
        "spec": {
            # `schedules` (Argo >= 3.6; v4 dropped the single `schedule`).
            "schedules": [monitor.schedule],
            "timezone": "UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "workflowMetadata": {"labels": dict(pod_labels)},
            "workflowSpec": {
                "entrypoint": "monitor",
                "serviceAccountName": options.service_account,
                "podMetadata": {"labels": dict(pod_labels)},
                "podGC": {"strategy": "OnPodSuccess"},
                "activeDeadlineSeconds": MONITOR_DEADLINE_SECONDS,
                "templates": [{"name": "monitor", "container": container}],
            },
        },
    }


def compile_monitoring(
    dep: Deployment,
    labels: dict[str, str],
    plan: PredictorPlan | None = None,
    options: CompileOptions | None = None,
) -> list[dict[str, Any]]:
    """ServiceMonitor, PrometheusRule, then one CronWorkflow per drift monitor (given the
    predictor plan whose stable Model the monitors compare with)."""
    out = [service_monitor(dep, labels), prometheus_rule(dep, labels)]
    if plan is not None:
        options = options or CompileOptions()
        out += [
            drift_cron_workflow(dep, monitor, labels, plan, options)
            for monitor in dep.spec.monitors
            if monitor.type == "drift"
        ]
    return out
