"""SLO observation and judgement, shared by the embedded control plane and the operator.

Pure: numbers in, decisions out. The callers read the numbers:
- in a cluster, Prometheus' HTTP API (`prometheus_queries`, `observations_from_prometheus`:
  the same series and 5-minute window as the compiled PrometheusRule), or each predictor's
  own Seldon executor exposition (`observation_from_text`: cumulative since it started);
- on one machine, aiml024's own runtime metrics from MLServer's metrics port, scraped on each
  tick (`runtime_metrics`): the SLO window is the time between two scrapes
  (`observed_between`).

Every observation is keyed by predictor role (`stable`, `canary`, `shadow`): Seldon names each
predictor after its role, and the runtime labels its metrics with it.
What a rolled-back split is, is the predictor plan's rule (aiml024.api.plan); what a breach
does to a rollout, aiml024.reconcile.rollout's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api import Deployment, DeploymentStatus, set_condition
from ..api.deployment import Rollback, Slo
from ..api.plan import traffic as planned_traffic
from ..compiler.monitoring import SERVER_METRIC, WINDOW

ROLLED_BACK = "RolledBack"
SLO_MET = "SLOMet"
# aiml024's runtime metrics (aiml024.runtime.serving), on MLServer's metrics port.
REQUESTS_METRIC = "aiml024_requests_total"
LATENCY_METRIC = "aiml024_request_seconds"


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
    slo: Slo, traffic: Mapping[str, int], observed: Mapping[str, Observation]
) -> Breach | None:
    """The canary's breach while it takes live traffic and rollback is on; else None.

    Only the canary (the candidate of a rollout) is judged: rolling back means sending
    everything to stable, which is the right move only when the candidate is the one
    misbehaving.
    """
    if not slo.rollback:
        return None
    return candidate_breach(slo, traffic, observed)


def candidate_breach(
    slo: Slo, traffic: Mapping[str, int], observed: Mapping[str, Observation]
) -> Breach | None:
    """The canary's breach of `slo` while it takes live traffic, whether or not rollback is
    on (a rollout holds its step on a breach it may not roll back)."""
    if traffic.get("canary", 0) <= 0:
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


def status_after_slo(
    dep: Deployment,
    status: DeploymentStatus,
    breach: Breach | None,
    observed: Mapping[str, Observation],
    now: datetime,
) -> DeploymentStatus:
    """Record the SLO state; on a breach, the rollback (the rolled-back plan's traffic, the
    condition that makes this generation's plan rolled back, when, why)."""
    status = status.model_copy(deep=True)
    generation = dep.metadata.generation or 1
    if breach is not None:
        status.slo_state = "Breached"
        status.last_rollback = Rollback(at=now, reason=breach.reason)
        status.traffic = planned_traffic(dep, rolled_back=True, rollout=status.rollout)
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


# --- Prometheus (a cluster) ------------------------------------------------------------------


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


def observations_from_prometheus(answers: Mapping[str, Any]) -> dict[str, Observation]:
    """Per-predictor observations from Prometheus /api/v1/query answers, keyed like the
    queries of prometheus_queries."""
    values: dict[str, dict[str, float]] = {}
    for name, answer in answers.items():
        for sample in ((answer or {}).get("data") or {}).get("result") or []:
            predictor = sample.get("metric", {}).get("predictor_name")
            value = float(sample["value"][1])
            if predictor and math.isfinite(value):
                values.setdefault(predictor, {})[name] = value
    return {p: Observation(v.get("latency_p95_ms"), v.get("error_rate")) for p, v in values.items()}


# --- text expositions ------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(4))
        except ValueError:
            continue
        out.append((match.group(1), dict(_LABEL.findall(match.group(3) or "")), value))
    return out


def _le(labels: Mapping[str, str]) -> float:
    return float(labels.get("le", "inf").replace("+Inf", "inf"))


def observation_from_text(text: str) -> Observation | None:
    """One predictor's observation from its Seldon executor's Prometheus text exposition
    (cumulative since the server started: a coarser view than Prometheus' 5-minute window)."""
    buckets: dict[float, float] = {}
    total = errors = 0.0
    for name, labels, value in _samples(text):
        if name == f"{SERVER_METRIC}_bucket":
            le = _le(labels)
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == f"{SERVER_METRIC}_count":
            total += value
            if labels.get("code", "").startswith("5"):
                errors += value
    if total <= 0:
        return None
    return Observation(_quantile(0.95, buckets) * 1000 if buckets else None, errors / total)


@dataclass(frozen=True)
class Counts:
    """One role's cumulative serving counters at a scrape: latency bucket counts (upper bound
    in seconds -> requests at most that slow), requests answered, and those answered 5xx."""

    buckets: dict[float, float] = field(default_factory=dict)
    total: float = 0.0
    errors: float = 0.0


def runtime_metrics(text: str, deployment: str | None = None) -> dict[str, Counts]:
    """Role -> cumulative Counts from aiml024's runtime metrics in a text exposition
    (`aiml024_requests_total{deployment,model,role,endpoint,code}` and the histogram
    `aiml024_request_seconds{deployment,model,role,endpoint}`), summed over models and
    endpoints; only `deployment`'s series when given."""
    buckets: dict[str, dict[float, float]] = {}
    totals: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name, labels, value in _samples(text):
        if deployment is not None and labels.get("deployment") != deployment:
            continue
        role = labels.get("role")
        if not role:
            continue
        if name == REQUESTS_METRIC:
            totals[role] = totals.get(role, 0.0) + value
            if labels.get("code", "").startswith("5"):
                errors[role] = errors.get(role, 0.0) + value
        elif name == f"{LATENCY_METRIC}_bucket":
            per_role = buckets.setdefault(role, {})
            le = _le(labels)
            per_role[le] = per_role.get(le, 0.0) + value
    return {
        role: Counts(buckets.get(role, {}), totals.get(role, 0.0), errors.get(role, 0.0))
        for role in sorted(set(buckets) | set(totals))
    }


def observed_between(
    before: Mapping[str, Counts], after: Mapping[str, Counts]
) -> dict[str, Observation]:
    """Role -> what it served between two scrapes (the SLO window): p95 latency of the
    requests in the window and their share of 5xx. A role that served nothing in the window
    has no observation; a counter that went down (the server restarted) counts from zero."""
    observed = {}
    for role, now in after.items():
        then = before.get(role, Counts())
        went_down = any(now.buckets.get(le, 0.0) < n for le, n in then.buckets.items())
        if now.total < then.total or went_down:
            then = Counts()  # restarted: everything since the restart is the window
        total = now.total - then.total
        window = {le: n - then.buckets.get(le, 0.0) for le, n in now.buckets.items()}
        requests = max(window.values(), default=0.0)
        if total <= 0 and requests <= 0:
            continue
        latency = _quantile(0.95, window) * 1000 if requests > 0 else None
        error_rate = (now.errors - then.errors) / total if total > 0 else None
        if latency is not None and not math.isfinite(latency):
            latency = None
        observed[role] = Observation(latency, error_rate)
    return observed


def _quantile(q: float, buckets: Mapping[float, float]) -> float:
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
