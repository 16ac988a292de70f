"""Decisions for a Deployment, shared by the embedded control plane and the kopf operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..api import Deployment, DeploymentStatus, Model, set_condition
from .model import stage_reaches


class NotServable(Exception):
    """The Deployment cannot serve yet; the message says what it waits for."""


@dataclass(frozen=True)
class PlannedPredictor:
    role: str  # stable, canary or shadow
    model: str
    artifact_uri: str
    sha256: str
    task: str
    weight: int
    shadow: bool = False


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


def routed_models(dep: Deployment, models: dict[str, Model]) -> list[tuple[str, Model]]:
    """(role, Model) for each of the Deployment's routes whose Model exists: what the
    deployment policy (aiml024.policy.deployment_input) judges."""
    return [
        (route.role, models[route.model]) for route in dep.spec.routes() if route.model in models
    ]


def _servable(dep: Deployment, name: str, models: dict[str, Model]) -> Model:
    model = models.get(name)
    if model is None:
        raise NotServable(f"model {name} not found")
    problem = servable_problem(model, dep.spec.require_stage)
    if problem:
        raise NotServable(problem)
    return model


def plan_predictors(dep: Deployment, models: dict[str, Model]) -> list[PlannedPredictor]:
    """Which model versions serve and with what share of traffic (weights sum to 100)."""
    plan = []
    for role, name, weight in dep.spec.routes():
        model = _servable(dep, name, models)
        assert model.status is not None and model.status.artifact_uri and model.status.sha256
        plan.append(
            PlannedPredictor(
                role=role,
                model=name,
                artifact_uri=model.status.artifact_uri,
                sha256=model.status.sha256,
                task=model.spec.task,
                weight=weight or 0,
                shadow=weight is None,
            )  # fmt: skip
        )
    return plan


def deployment_status(
    dep: Deployment,
    plan: list[PlannedPredictor] | None,
    endpoint: str | None,
    now: datetime,
    waiting: str | None = None,
) -> DeploymentStatus:
    """Status after an attempt to serve `plan` (None with `waiting`: could not serve yet)."""
    previous = dep.status or DeploymentStatus()
    generation = dep.metadata.generation or 1
    status = DeploymentStatus(
        observed_generation=generation,
        conditions=list(previous.conditions),
        slo_state=previous.slo_state,
        last_rollback=previous.last_rollback,
        drift=dict(previous.drift),
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
    status.traffic = {p.role: p.weight for p in plan}
    status.models = {p.role: p.sha256 for p in plan}
    served = ", ".join(f"{p.model} ({p.role}, {p.weight}%)" for p in plan)
    status.conditions = set_condition(
        status.conditions, "Ready", "True", "Serving", f"serving {served} at {endpoint}", now,
        generation,
    )  # fmt: skip
    return status
