"""Decisions for a Deployment, shared by the embedded control plane and the kopf operator:
which Model versions may serve and how traffic splits (the predictor plan, made here once for
both, following the rollout that aiml024.reconcile.rollout decides), what its status says, and
what Seldon reports back in a cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..api import Deployment, DeploymentStatus, Model, set_condition
from ..api.deployment import RolloutStatus
from ..api.plan import PredictorPlan, ServedModel, plan_deployment, planned_routes
from .model import stage_reaches

Obj = dict[str, Any]


class NotServable(Exception):
    """The Deployment cannot serve yet; the message says what it waits for."""


def servable_problem(model: Model, required: str) -> str | None:
    """Why `model` may not serve where `required` (a stage, or `any`) is asked, or None.

    Only the platform's own record counts: the registered artifact and digest, and a policy
    decision that allowed a stage at least `required` for exactly that digest.
    """
    name, status = model.metadata.name, model.status
    if status is None or not status.artifact_uri or not status.sha256:
        return f"model {name} has no registered artifact yet"
    if required == "any":
        return None
    decision = status.policy
    if decision is None:
        return f"model {name} has no recorded policy decision"
    if decision.sha256 != status.sha256:
        return f"model {name}'s recorded policy decision is for another artifact digest"
    if decision.decision != "allow" or not stage_reaches(decision.stage, required):
        return (
            f"model {name}'s recorded policy decision is {decision.decision} for stage "
            f"{decision.stage}; the deployment requires an allowed {required}"
        )
    if not stage_reaches(status.stage, required):
        return f"model {name} is in stage {status.stage}, the deployment requires {required}"
    return None


def routed_models(
    dep: Deployment, models: dict[str, Model], rollout: RolloutStatus | None = None
) -> list[tuple[str, Model]]:
    """(role, Model) for each route the plan serves (with `rollout`: see
    api.plan.planned_routes) whose Model exists: what the deployment policy
    (aiml024.policy.deployment_input) judges."""
    return [
        (route.role, models[route.model])
        for route in planned_routes(dep, rollout)
        if route.model in models
    ]


def policy_subject(dep: Deployment, rollout: RolloutStatus | None = None) -> Deployment:
    """`dep` as the deployment policy should see it while `rollout` runs: its routes are the
    plan's (pass `routed_models(dep, models, rollout)` with it), so a candidate that waits for
    approval, or a stable Model a promotion replaced, is not judged as if it served."""
    if rollout is None:
        return dep
    view = dep.model_copy(deep=True)
    view.spec.model = planned_routes(dep, rollout)[0].model
    view.spec.strategy = type(dep.spec.strategy)()  # single: every route comes from the plan
    return view


def _servable(dep: Deployment, name: str, models: dict[str, Model]) -> Model:
    model = models.get(name)
    if model is None:
        raise NotServable(f"model {name} not found")
    problem = servable_problem(model, dep.spec.require_stage)
    if problem:
        raise NotServable(problem)
    return model


def plan_predictors(
    dep: Deployment,
    models: dict[str, Model],
    rolled_back: bool = False,
    rollout: RolloutStatus | None = None,
) -> PredictorPlan:
    """The predictor plan: which registered Model versions serve, in which role, with what
    share of traffic (live weights sum to 100; `rolled_back`: all of it on stable; `rollout`:
    the candidate at the rollout's weight, alone as stable once Promoted, left out while it
    waits for approval, see api.plan.planned_routes). NotServable while a Model the plan
    serves may not serve."""
    served = {}
    for route in planned_routes(dep, rollout):
        model = _servable(dep, route.model, models)
        assert model.status is not None and model.status.artifact_uri and model.status.sha256
        served[route.model] = ServedModel(
            route.model, model.status.artifact_uri, model.status.sha256, model.spec.task
        )
    return plan_deployment(dep, served, rolled_back, rollout)


def deployment_status(
    dep: Deployment,
    plan: PredictorPlan | None,
    endpoint: str | None,
    now: datetime,
    waiting: str | None = None,
    rollout: RolloutStatus | None = None,
) -> DeploymentStatus:
    """Status after an attempt to serve `plan` (None with `waiting`: could not serve yet),
    recording `rollout` (the plan's; None: no rollout) as status.rollout."""
    previous = dep.status or DeploymentStatus()
    generation = dep.metadata.generation or 1
    status = DeploymentStatus(
        observed_generation=generation,
        conditions=list(previous.conditions),
        slo_state=previous.slo_state,
        last_rollback=previous.last_rollback,
        drift=dict(previous.drift),
        monitors=list(previous.monitors),
        rollout=rollout,
    )
    if plan is None or endpoint is None:
        status.phase = "Pending"
        status.conditions = set_condition(
            status.conditions, "Ready", "False", "WaitingForModel", waiting or "waiting", now,
            generation,
        )  # fmt: skip
        return status
    status.phase = "Serving"
    status.endpoint = endpoint
    status.traffic = plan.traffic()
    status.models = plan.digests()
    status.conditions = set_condition(
        status.conditions, "Ready", "True", "Serving",
        f"serving {plan.describe()} at {endpoint}", now, generation,
    )  # fmt: skip
    return status


# --- what Seldon reports (a cluster only) -----------------------------------------------------


def seldon_ready(seldon: Obj | None) -> tuple[bool, str | None, str]:
    """(available, endpoint, why not) from a SeldonDeployment's status."""
    if seldon is None:
        return False, None, "the SeldonDeployment does not exist yet"
    status = seldon.get("status") or {}
    state = status.get("state") or "Creating"
    if state != "Available":
        reason = status.get("description") or f"SeldonDeployment is {state}"
        return False, None, reason
    address = (status.get("address") or {}).get("url")
    meta = seldon["metadata"]
    endpoint = address or f"http://{meta['name']}.{meta.get('namespace', 'default')}.svc:8000"
    return True, endpoint, ""


def live_split(seldon: Obj | None) -> dict[str, int]:
    """predictor -> percent of live traffic, as the SeldonDeployment routes it now."""
    predictors = ((seldon or {}).get("spec") or {}).get("predictors") or []
    return {p["name"]: int(p.get("traffic", 0)) for p in predictors if not p.get("shadow")}
