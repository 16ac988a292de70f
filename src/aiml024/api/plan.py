"""The predictor plan: which Model versions serve a Deployment, in which role, with what share
of live traffic, and whether its canary was rolled back.

One typed value, made once from the Deployment (`plan_deployment`; both control planes reach
it through aiml024.reconcile.deployment.plan_predictors, which first checks that every Model
may serve) and consumed as it is:
- by the compiler: one Seldon predictor per planned predictor, its traffic the planned weight;
- by the local model server: one MLServer model per planned predictor; the route owner reads
  the plan back from its model settings (`RuntimeSettings`) to split and shadow traffic;
- by the operator: the Deployment's status (traffic, digests) and the SLO rollback.

Rollback and the rollout (`DeploymentStatus.rollout`, decided by aiml024.reconcile.rollout) are
inputs to the plan, not edits of a compiled document: `planned_routes` says which Models a
rollout serves in which role and at what weight, and `weight_of` what a rolled-back split is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import TypeAdapter

from .deployment import Deployment, RolloutStatus, Route
from .monitoring import monitor_root

# The MLServer implementation every predictor runs (aiml024.runtime.serving.Aiml024Runtime);
# named, never imported, so the compiler and the local control plane need no ML stack.
RUNTIME_CLASS = "aiml024.runtime.serving.Aiml024Runtime"

Role = Literal["stable", "canary", "shadow"]


class MissingModel(LookupError):
    """The Deployment names a Model that the caller has nothing to serve for."""


@dataclass(frozen=True)
class ServedModel:
    """What serving needs to know about a registered Model version."""

    name: str
    artifact_uri: str
    sha256: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class Predictor:
    """One planned predictor: the Model version it serves and its share of live traffic."""

    role: Role
    model: ServedModel
    weight: int  # percent of live traffic; 0 for a shadow, which gets a copy of it instead
    shadow: bool = False


@dataclass(frozen=True)
class PredictorPlan:
    """A Deployment's predictors, stable first; live weights sum to 100."""

    deployment: str
    predictors: tuple[Predictor, ...]
    rolled_back: bool = False

    def __iter__(self) -> Iterator[Predictor]:
        return iter(self.predictors)

    def __len__(self) -> int:
        return len(self.predictors)

    @property
    def stable(self) -> Predictor:
        """The predictor that owns the Deployment's route (the stable one, else the first)."""
        return next((p for p in self.predictors if p.role == "stable"), self.predictors[0])

    @property
    def live(self) -> list[Predictor]:
        return [p for p in self.predictors if not p.shadow]

    @property
    def shadows(self) -> list[Predictor]:
        return [p for p in self.predictors if p.shadow]

    def traffic(self) -> dict[str, int]:
        """Role -> percent of live traffic (what status.traffic reports)."""
        return {p.role: p.weight for p in self.live}

    def digests(self) -> dict[str, str]:
        """Role -> the artifact digest it serves (what status.models reports)."""
        return {p.role: p.model.sha256 or "" for p in self.predictors}

    def describe(self) -> str:
        return ", ".join(f"{p.model.name} ({p.role}, {p.weight}%)" for p in self.predictors)


# Phases in which the candidate takes no live traffic (it keeps running at 0 %).
_CANDIDATE_OFF = ("RolledBack", "Concluded")


def planned_routes(dep: Deployment, rollout: RolloutStatus | None = None) -> list[Route]:
    """The routes the plan serves: the spec's (`DeploymentSpec.routes()`) without a rollout;
    with one, its stable Model (`rollout.stable`, else spec.model) and the candidate as `canary` at `rollout.weight` (the
    stable gets the rest; RolledBack and Concluded: 0), the candidate left out while it
    WaitsForApproval, and once Promoted the candidate alone, in role `stable` (it owns the
    product route). The spec's shadow keeps its copy throughout."""
    routes = dep.spec.routes()
    if rollout is None:
        return routes
    shadows = [r for r in routes if r.role == "shadow"]
    stable = rollout.stable or dep.spec.model
    if rollout.phase == "Promoted":
        return [Route("stable", rollout.candidate, 100), *shadows]
    if rollout.phase == "WaitingForApproval":
        return [Route("stable", stable, 100), *shadows]
    weight = 0 if rollout.phase in _CANDIDATE_OFF else max(0, min(100, rollout.weight))
    return [
        Route("stable", stable, 100 - weight),
        Route("canary", rollout.candidate, weight),
        *shadows,
    ]


def weight_of(route: Route, rolled_back: bool = False) -> int:
    """The percent of live traffic `route` gets: what the spec asks, or, once this generation's
    canary was rolled back, everything on stable (the canary keeps running at 0 %). A shadow
    takes no live traffic: it gets a copy."""
    if route.weight is None:
        return 0
    if rolled_back:
        return 100 if route.role == "stable" else 0
    return route.weight


def traffic(
    dep: Deployment, rolled_back: bool = False, rollout: RolloutStatus | None = None
) -> dict[str, int]:
    """Role -> percent of live traffic for `dep`: the plan's split without its Models."""
    return {
        r.role: weight_of(r, rolled_back)
        for r in planned_routes(dep, rollout)
        if r.weight is not None
    }


def plan_deployment(
    dep: Deployment,
    models: Mapping[str, ServedModel],
    rolled_back: bool = False,
    rollout: RolloutStatus | None = None,
) -> PredictorPlan:
    """The plan for `dep` (and its `rollout`, see planned_routes), serving `models[name]` for
    each Model its routes name (MissingModel when one is absent). Whether those Models may
    serve is the caller's decision."""
    predictors = []
    for route in planned_routes(dep, rollout):
        model = models.get(route.model)
        if model is None:
            raise MissingModel(f"model {route.model!r} (predictor {route.role}) is not registered")
        predictors.append(
            Predictor(
                role=route.role,
                model=model,
                weight=weight_of(route, rolled_back),
                shadow=route.weight is None,
            )
        )
    rolled_back = rolled_back or (rollout is not None and rollout.phase == "RolledBack")
    return PredictorPlan(dep.metadata.name, tuple(predictors), rolled_back)


# The runtime's settings in a cluster, where each pod serves one model: the container's
# environment (the compiler writes it), not the model settings.
SHA256_ENV = "AIML024_MODEL_SHA256"
DEPLOYMENT_ENV = "AIML024_DEPLOYMENT"
REQUEST_LOG_ENV = "AIML024_REQUEST_LOG"
ROLE_ENV = "AIML024_ROLE"


def request_log_root(store_uri: str, namespace: str, deployment: str) -> str:
    """Where a Deployment's served requests, feedback and drift reports live (a URI root, see
    aiml024.runtime.requestlog): one place for both control planes to compute it."""
    return monitor_root(store_uri, namespace, deployment) + "/"


@dataclass(frozen=True)
class RuntimeSettings:
    """What aiml024's MLServer runtime reads from a model's settings (`parameters.extra`).

    `sha256`: the bundle digest the model must have. `deployment`: the Deployment whose product
    route this model serves. `plan`: set on that route's owner when the Deployment's predictors
    share one MLServer (the local model server): the runtime splits the route over the plan's
    live predictors by weight and copies it to its shadows. In a cluster each Seldon predictor
    serves one model and Seldon splits traffic: no plan, and the digest and the route come from
    the container's environment ($AIML024_MODEL_SHA256, $AIML024_DEPLOYMENT). `request_log`:
    the URI root of the request/response log (`request_log_root`; $AIML024_REQUEST_LOG).
    `role`: this model's predictor role where no plan says it (a cluster pod; $AIML024_ROLE),
    which its requests are logged and counted under (A/B outcomes, SLO windows, drift).
    """

    sha256: str | None = None
    deployment: str | None = None
    plan: PredictorPlan | None = None
    request_log: str | None = None
    role: Role | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and self.deployment != self.plan.deployment:
            raise ValueError(
                f"the plan is for deployment {self.plan.deployment}, not {self.deployment}"
            )

    def extra(self) -> dict[str, Any]:
        """The `parameters.extra` of a model-settings.json (JSON-native)."""
        extra: dict[str, Any] = _SETTINGS.dump_python(self, mode="json", exclude_none=True)
        return extra

    @classmethod
    def read(
        cls, extra: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> RuntimeSettings:
        """Read back what `extra()` wrote (pydantic's ValidationError on anything else); what
        it leaves unset, from `environ` (a cluster pod's)."""
        settings: RuntimeSettings = _SETTINGS.validate_python(dict(extra or {}))
        environ = environ or {}
        return replace(
            settings,
            sha256=settings.sha256 or environ.get(SHA256_ENV) or None,
            deployment=settings.deployment or environ.get(DEPLOYMENT_ENV) or None,
            request_log=settings.request_log or environ.get(REQUEST_LOG_ENV) or None,
            role=settings.role or _role(environ.get(ROLE_ENV)),
        )


def _role(value: str | None) -> Role | None:
    if value is None or value == "":
        return None
    if value not in ("stable", "canary", "shadow"):
        raise ValueError(f"${ROLE_ENV} must be stable, canary or shadow, not {value!r}")
    return value  # type: ignore[return-value]


_SETTINGS = TypeAdapter(RuntimeSettings)
