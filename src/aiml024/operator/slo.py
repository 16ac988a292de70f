"""The operator's part of the SLO and rollout: moving a live SeldonDeployment's traffic.

The judgements (Observation, slo_breach, status_after_slo, the Prometheus and exposition
parsers) are shared with the embedded control plane in aiml024.reconcile.slo and re-exported
here; the rollout's transitions are aiml024.reconcile.rollout's. What a split is, is the
predictor plan's rule (aiml024.api.plan): the operator moves live traffic to the plan's split.
"""

from __future__ import annotations

from typing import Any

from ..reconcile.slo import (
    ROLLED_BACK,
    SLO_MET,
    Breach,
    Observation,
    observation_from_text,
    observations_from_prometheus,
    prometheus_queries,
    rolled_back,
    slo_breach,
    status_after_slo,
)

__all__ = [
    "ROLLED_BACK",
    "SLO_MET",
    "Breach",
    "Observation",
    "observation_from_text",
    "observations_from_prometheus",
    "prometheus_queries",
    "rolled_back",
    "slo_breach",
    "status_after_slo",
    "traffic_patch",
]

Obj = dict[str, Any]


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
