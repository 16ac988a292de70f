"""The Deployment: which Model versions serve, how traffic splits, and what is watched."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from .common import API_VERSION, ObjectMeta, StatusBase, Strict


class Canary(Strict):
    model: str = Field(min_length=1, description="The candidate Model.")
    weight: int = Field(default=10, ge=0, le=100, description="Percent of traffic to the canary.")
    steps: list[int] = Field(
        default_factory=list,
        description="Not supported yet (refused): weights to walk through while the SLOs hold.",
    )


class Shadow(Strict):
    model: str = Field(min_length=1)


class Strategy(Strict):
    type: Literal["single", "canary", "shadow", "ab"] = "single"
    canary: Canary | None = None
    shadow: Shadow | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> Strategy:
        if self.type in ("canary", "ab") and self.canary is None:
            raise ValueError(f"strategy.canary is required for strategy.type {self.type}")
        if self.type == "shadow" and self.shadow is None:
            raise ValueError("strategy.shadow is required for strategy.type shadow")
        return self


class Autoscaling(Strict):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=3, ge=1)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class Slo(Strict):
    latency_p95_ms: float = Field(default=200, gt=0)
    error_rate: float = Field(default=0.01, ge=0, le=1)
    rollback: bool = True


class Monitor(Strict):
    """Not supported yet (refused): nothing computes a drift score for a monitor to watch."""

    type: Literal["drift", "performance"] = Field(
        default="drift", description="performance is not supported yet (refused)."
    )
    method: Literal["psi", "ks", "kl"] = "psi"
    threshold: float = Field(default=0.2, gt=0)
    schedule: str = Field(default="0 * * * *", description="Not supported yet (refused).")
    action: Literal["alert", "retrain"] = Field(
        default="alert", description="retrain is not supported yet (refused)."
    )


class Route(NamedTuple):
    """One predictor of a Deployment: its role, the Model it serves, its share of traffic."""

    role: Literal["stable", "canary", "shadow"]
    model: str
    weight: int | None  # percent of live traffic; None for a shadow, which gets a copy


class DeploymentSpec(Strict):
    model: str = Field(min_length=1, description="The stable Model that serves.")
    strategy: Strategy = Field(default_factory=Strategy)
    replicas: int = Field(default=1, ge=0)
    autoscaling: Autoscaling | None = None
    slo: Slo = Field(default_factory=Slo)
    monitors: list[Monitor] = Field(
        default_factory=list,
        description="Not supported yet (refused): nothing emits the drift score they watch.",
    )
    require_stage: Literal["staging", "production", "any"] = Field(
        default="production",
        description=(
            "Serve only a Model whose recorded policy decision allows this stage; `any` only in "
            "a namespace labelled aiml024.io/environment=development."
        ),
    )

    def routes(self) -> list[Route]:
        """The traffic split this spec asks for; live weights sum to 100."""
        strategy = self.strategy
        if strategy.type in ("canary", "ab") and strategy.canary is not None:
            weight = strategy.canary.weight
            return [
                Route("stable", self.model, 100 - weight),
                Route("canary", strategy.canary.model, weight),
            ]
        if strategy.type == "shadow" and strategy.shadow is not None:
            return [Route("stable", self.model, 100), Route("shadow", strategy.shadow.model, None)]
        return [Route("stable", self.model, 100)]


class Rollback(Strict):
    at: datetime
    reason: str


class DeploymentStatus(StatusBase):
    endpoint: str | None = None
    traffic: dict[str, int] = Field(default_factory=dict)
    models: dict[str, str] = Field(
        default_factory=dict, description="Predictor name -> artifact sha256 it serves."
    )
    slo_state: Literal["Unknown", "Met", "Breached"] = "Unknown"
    last_rollback: Rollback | None = None
    drift: dict[str, float] = Field(
        default_factory=dict, description="Not written yet: no drift score is computed."
    )


class Deployment(Strict):
    api_version: Literal["aiml024.io/v1alpha1"] = API_VERSION
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus | None = None
