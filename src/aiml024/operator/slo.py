"""SLO decisions during a canary: is the canary breaching, and what a rollback records.

Pure: observations in, decisions out. Reading the numbers (Prometheus' HTTP API, or each
predictor's own /prometheus endpoint) happens in deployment.py; parsing them happens here.
What a rolled-back split is, is the predictor plan's rule (aiml024.api.plan.weight_of): the
operator plans with `rolled_back(dep)` as an input, and moves live traffic to that split.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api import Deployment, DeploymentStatus, set_condition
from ..api.deployment import Rollback, Slo
from ..api.plan import traffic as planned_traffic
from ..compiler.monitoring import SERVER_METRIC, WINDOW

Obj = dict[str, Any]
ROLLED_BACK = "RolledBack"
SLO_MET = "SLOMet"


@dataclass(frozen=True)
class Observation:
    """One predictor's recent serving: p95 latency (ms) and share of 5xx answers."""

    latency_p95_ms: float | None = None
    error_rate: float | None = None


@dataclass(frozen=True)
class Breach:
    predictor: str
    reason: str


def slo_breach(
    slo: Slo, traffic: dict[str, int], observed: dict[str, Observation]
) -> Breach | None:
    """The canary's breach while it takes live traffic and rollback is on; else None.

    Only the canary is judged: rolling back means sending everything to stable, which is the
    right move only when the candidate is the one misbehaving.
    """
    if not slo.rollback or traffic.get("canary", 0) <= 0:
        return None
    seen = observed.get("canary")
    if seen is None:
        return None
    if seen.latency_p95_ms is not None and seen.latency_p95_ms > slo.latency_p95_ms:
        return Breach(
            "canary",
            f"canary p95 latency {seen.latency_p95_ms:.0f} ms is above the "
            f"SLO of {slo.latency_p95_ms:g} ms",
        )
    if seen.error_rate is not None and seen.error_rate > slo.error_rate:
        return Breach(
            "canary",
            f"canary error rate {seen.error_rate:.3g} is above the SLO of {slo.error_rate:g}",
        )
    return None


def rolled_back(dep: Deployment) -> bool:
    """Whether this generation's canary was rolled back (it stays so until the spec changes)."""
    cond = dep.status.condition(ROLLED_BACK) if dep.status else None
    return bool(
        cond
        and cond.status == "True"
        and cond.observed_generation == (dep.metadata.generation or 1)
    )


def traffic_patch(seldon: Obj, split: dict[str, int]) -> list[Obj]:
    """JSON patch moving the live SeldonDeployment's predictors to `split` (predictor ->
    percent of live traffic, e.g. a rolled-back plan's), only if it is unchanged since read."""
    ops: list[Obj] = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": seldon["metadata"]["resourceVersion"],
        }
    ]
    for i, predictor in enumerate(seldon["spec"]["predictors"]):
        if not predictor.get("shadow"):
            ops.append(
                {
                    "op": "replace" if "traffic" in predictor else "add",
                    "path": f"/spec/predictors/{i}/traffic",
                    "value": split.get(predictor["name"], 0),
                }
            )
    return ops


def status_after_slo(
    dep: Deployment,
    status: DeploymentStatus,
    breach: Breach | None,
    observed: dict[str, Observation],
    now: datetime,
) -> DeploymentStatus:
    """Record the SLO state; on a breach, the rollback (the rolled-back plan's traffic, the
    condition that makes this generation's plan rolled back, when, why)."""
    status = status.model_copy(deep=True)
    generation = dep.metadata.generation or 1
    if breach is not None:
        status.slo_state = "Breached"
        status.last_rollback = Rollback(at=now, reason=breach.reason)
        status.traffic = planned_traffic(dep, rolled_back=True)
        status.conditions = set_condition(
            status.conditions,
            ROLLED_BACK,
            "True",
            "SLOBreached",
            f"traffic moved back to stable: {breach.reason}",
            now,
            generation,
        )
        status.conditions = set_condition(
            status.conditions, SLO_MET, "False", "SLOBreached", breach.reason, now, generation
        )
    elif observed and status.slo_state != "Breached":
        status.slo_state = "Met"
        status.conditions = set_condition(
            status.conditions,
            SLO_MET,
            "True",
            "WithinSLO",
            "latency and error rate within the SLO",
            now,
            generation,
        )
    return status


# --- reading the numbers -------------------------------------------------------------------


def prometheus_queries(dep: Deployment) -> dict[str, str]:
    """PromQL per predictor (the same series and window as the compiled PrometheusRule)."""
    selector = f'deployment_name="{dep.metadata.name}"'
    if dep.metadata.namespace:
        selector += f',namespace="{dep.metadata.namespace}"'

    def rate(series: str, extra: str = "") -> str:
        return f"rate({SERVER_METRIC}_{series}{{{selector}{extra}}}[{WINDOW}])"

    server_errors = rate("count", ',code=~"5.."')
    return {
        "latency_p95_ms": "histogram_quantile(0.95, sum by (le, predictor_name) "
        f"({rate('bucket')})) * 1000",
        "error_rate": f"sum by (predictor_name) ({server_errors}) / "
        f"sum by (predictor_name) ({rate('count')})",
    }


def observations_from_prometheus(answers: dict[str, Obj]) -> dict[str, Observation]:
    """Per-predictor observations from Prometheus /api/v1/query answers, keyed like the
    queries of prometheus_queries."""
    values: dict[str, dict[str, float]] = {}
    for field, answer in answers.items():
        for sample in ((answer or {}).get("data") or {}).get("result") or []:
            predictor = sample.get("metric", {}).get("predictor_name")
            value = float(sample["value"][1])
            if predictor and math.isfinite(value):
                values.setdefault(predictor, {})[field] = value
    return {p: Observation(v.get("latency_p95_ms"), v.get("error_rate")) for p, v in values.items()}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def observation_from_text(text: str) -> Observation | None:
    """One predictor's observation from its Prometheus text exposition (cumulative since the
    server started: a coarser view than Prometheus' 5-minute window)."""
    buckets: dict[float, float] = {}
    total = errors = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or not match.group(1).startswith(SERVER_METRIC):
            continue
        name, labels, value = (
            match.group(1),
            dict(_LABEL.findall(match.group(3) or "")),
            float(match.group(4)),
        )
        if name == f"{SERVER_METRIC}_bucket":
            le = float(labels.get("le", "inf").replace("+Inf", "inf"))
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == f"{SERVER_METRIC}_count":
            total += value
            if labels.get("code", "").startswith("5"):
                errors += value
    if total <= 0:
        return None
    return Observation(_quantile(0.95, buckets) * 1000 if buckets else None, errors / total)


def _quantile(q: float, buckets: dict[float, float]) -> float:
    """histogram_quantile over cumulative buckets (linear within a bucket, as Prometheus)."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower
            width = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1)
        lower, below = bound, buckets[bound]
    return lower
