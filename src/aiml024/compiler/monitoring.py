"""Deployment -> ServiceMonitor and PrometheusRule (Prometheus Operator, monitoring.coreos.com/v1).

Series used (Seldon Core v1's executor exports the first; aiml024's runtime the second):
- `seldon_api_executor_server_requests_seconds_{bucket,count}` with `deployment_name`,
  `predictor_name` and `code` labels: the latency and error-rate SLOs, per predictor so a
  breached canary can be rolled back alone.
- `aiml024_drift_score{deployment, method}`: one series per drift monitor.
"""

from __future__ import annotations

from typing import Any

from aiml024.api import Deployment

SERVER_METRIC = "seldon_api_executor_server_requests_seconds"
DRIFT_METRIC = "aiml024_drift_score"
WINDOW = "5m"
FOR = "5m"


def _number(value: float) -> str:
    """PromQL literal without float noise: 150.0 -> 150, 0.01 -> 0.01."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _metadata(dep: Deployment, name: str, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if dep.metadata.namespace:
        metadata["namespace"] = dep.metadata.namespace
    metadata["labels"] = dict(labels)
    return metadata


def _selector(dep: Deployment, extra: str = "") -> str:
    matchers = [f'deployment_name="{dep.metadata.name}"']
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
                        f'{DRIFT_METRIC}{{deployment="{name}",method="{m.method}"}} '
                        f"> {_number(m.threshold)}",
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


def compile_monitoring(dep: Deployment, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [service_monitor(dep, labels), prometheus_rule(dep, labels)]
