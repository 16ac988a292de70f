"""The Deployment: which Model versions serve, how traffic splits, and what is watched."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from .common import API_VERSION, ObjectMeta, StatusBase, Strict


class CanaryStep(Strict):
    # At most 99: all of the traffic is a promotion, which the deployment policy must allow for
    # the candidate alone; it comes after the last step.
    weight: int = Field(ge=1, le=99, description="Percent of live traffic to the canary.")
    pause_seconds: int = Field(
        default=300,
        ge=0,
        description="How long this step holds, with the SLO met, before the next one.",
    )


class Canary(Strict):
    model: str = Field(min_length=1, description="The candidate Model.")
    weight: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Percent of traffic to the canary while it holds (no steps).",
    )
    steps: list[CanaryStep] = Field(
        default_factory=list,
        max_length=20,
        description=(
            "Weights to walk through, each held for its pause while the SLO holds; after the "
            "last step the canary is promoted and serves all live traffic. A breach rolls back."
        ),
    )

    @model_validator(mode="after")
    def _ascending(self) -> Canary:
        ascending_steps("canary.steps", self.steps)
        return self


def ascending_steps(where: str, steps: list[CanaryStep]) -> None:
    """Refuse canary steps whose weights do not ascend (each above the one before)."""
    weights = [step.weight for step in steps]
    if any(later <= earlier for earlier, later in zip(weights, weights[1:], strict=False)):
        raise ValueError(f"{where} weights must ascend (each above the one before), got {weights}")


class Shadow(Strict):
    model: str = Field(min_length=1)


class AbTest(Strict):
    """Split live traffic between the stable Model (A) and `model` (B) and compare the
    outcomes clients report (POST /v1/feedback/<deployment>) with a sequential test."""

    model: str = Field(min_length=1, description="Variant B.")
    weight: int = Field(default=50, ge=1, le=99, description="Percent of live traffic to B.")
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="False-positive rate of the whole sequential test."
    )
    min_samples: int = Field(
        default=100, ge=10, description="Outcomes per variant before any decision."
    )
    max_samples: int = Field(
        default=100_000,
        ge=10,
        description="Outcomes per variant after which the test stops with no difference.",
    )
    promote: bool = Field(
        default=True,
        description="Promote B when it is significantly better and the policy allows it.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> AbTest:
        if self.min_samples > self.max_samples:
            raise ValueError("ab.minSamples must not exceed ab.maxSamples")
        return self


class BlueGreen(Strict):
    model: str = Field(min_length=1, description="The green Model, switched to all at once.")
    preview_seconds: int = Field(
        default=60,
        ge=0,
        description="How long green serves beside blue with no live traffic before the switch.",
    )


class Strategy(Strict):
    type: Literal["single", "canary", "shadow", "ab", "bluegreen"] = "single"
    canary: Canary | None = None
    shadow: Shadow | None = None
    ab: AbTest | None = None
    blue_green: BlueGreen | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> Strategy:
        wanted = {
            "canary": ("canary", self.canary),
            "shadow": ("shadow", self.shadow),
            "ab": ("ab", self.ab),
            "bluegreen": ("blueGreen", self.blue_green),
        }
        if self.type in wanted and wanted[self.type][1] is None:
            field = wanted[self.type][0]
            raise ValueError(f"strategy.{field} is required for strategy.type {self.type}")
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


class Retrain(Strict):
    """What a firing monitor with `action: retrain` runs: the next generation of an Experiment
    on fresh data, whose Model then rolls out through the gate as a canary."""

    experiment: str = Field(min_length=1, description="The Experiment (same namespace) to rerun.")
    data_uri: str = Field(
        min_length=1, description="Where the fresh data is: the new generation's spec.data.uri."
    )
    steps: list[CanaryStep] = Field(
        default_factory=lambda: [CanaryStep(weight=10), CanaryStep(weight=50)],
        min_length=1,
        max_length=20,
        description="The canary steps the retrained Model rolls out through.",
    )

    @model_validator(mode="after")
    def _ascending(self) -> Retrain:
        ascending_steps("retrain.steps", self.steps)
        return self


class Monitor(Strict):
    """A drift monitor: on its schedule, compares the logged requests since its last run with
    the training reference profile stored in the served bundle."""

    name: str = Field(default="drift", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    type: Literal["drift", "performance"] = Field(
        default="drift", description="performance is not supported yet (refused)."
    )
    method: Literal["psi", "ks", "chi2"] = Field(
        default="psi",
        description=(
            "The statistic compared with the threshold, per feature and on the predictions: "
            "psi (population stability index), ks (Kolmogorov-Smirnov D; chi2 for categorical "
            "columns), chi2 (1 - p-value of a chi-square test on the binned values)."
        ),
    )
    threshold: float = Field(default=0.2, gt=0)
    schedule: str = Field(default="0 * * * *", description="Cron schedule (UTC).")
    min_rows: int = Field(
        default=200, ge=1, description="Fewer logged rows than this since the last run: no verdict."
    )
    features: list[str] = Field(
        default_factory=list, description="Input columns to watch; empty: every input column."
    )
    action: Literal["alert", "retrain"] = "alert"
    webhook: str | None = Field(
        default=None,
        # https, or plain http to this machine's loopback only: a cluster's monitor Pod must not
        # reach internal plain-HTTP services (cloud metadata) with the runtime's identity.
        pattern=r"^(https://|http://(127\.0\.0\.1|localhost)(:[0-9]+)?(/|$))",
        description="Slack-compatible incoming-webhook URL (https) that gets each alert.",
    )
    retrain: Retrain | None = None

    @model_validator(mode="after")
    def _checked(self) -> Monitor:
        if self.action == "retrain" and self.retrain is None:
            raise ValueError("monitor.retrain is required for action retrain")
        problem = cron_problem(self.schedule)
        if problem:
            raise ValueError(f"monitor.schedule: {problem}")
        return self


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron schedule (Argo CronWorkflow's), or None."""
    from croniter import croniter  # small; only the api's validation needs it

    if len(expression.split()) != 5 and not expression.startswith("@"):
        return f"{expression!r} is not a five-field cron schedule (minute hour day month weekday)"
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid cron schedule"
    return None


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
        default_factory=list, description="Drift monitors over the logged requests."
    )
    require_stage: Literal["staging", "production", "any"] = Field(
        default="production",
        description=(
            "Serve only a Model whose recorded policy decision allows this stage; `any` only in "
            "a namespace labelled aiml024.io/environment=development."
        ),
    )

    @model_validator(mode="after")
    def _unique_monitor_names(self) -> DeploymentSpec:
        names = [m.name for m in self.monitors]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"monitors: each needs its own name; repeated: {', '.join(repeated)}")
        return self

    def routes(self) -> list[Route]:
        """The traffic split this spec asks for; live weights sum to 100."""
        strategy = self.strategy
        if strategy.type == "canary" and strategy.canary is not None:
            canary = strategy.canary
            weight = canary.steps[0].weight if canary.steps else canary.weight
            return [
                Route("stable", self.model, 100 - weight),
                Route("canary", canary.model, weight),
            ]
        if strategy.type == "ab" and strategy.ab is not None:
            return [
                Route("stable", self.model, 100 - strategy.ab.weight),
                Route("canary", strategy.ab.model, strategy.ab.weight),
            ]
        if strategy.type == "bluegreen" and strategy.blue_green is not None:
            # Green serves beside blue with no live traffic until the switch (the rollout's).
            return [Route("stable", self.model, 100), Route("canary", strategy.blue_green.model, 0)]
        if strategy.type == "shadow" and strategy.shadow is not None:
            return [Route("stable", self.model, 100), Route("shadow", strategy.shadow.model, None)]
        return [Route("stable", self.model, 100)]


class MonitorStatus(Strict):
    """The last run of one monitor (written by the control plane from its DriftReport)."""

    name: str
    last_run: datetime
    rows: int = 0
    score: float | None = None  # the largest feature or prediction score; None: too few rows
    drifted: bool = False
    report_uri: str | None = None
    last_alert: datetime | None = None
    retrained_generation: int | None = Field(
        default=None, description="The Experiment generation the last retrain started."
    )


class AbResult(Strict):
    """The sequential A/B test's state (mSPRT-style always-valid inference)."""

    samples: dict[str, int] = Field(default_factory=dict)  # role -> outcomes counted
    means: dict[str, float] = Field(default_factory=dict)  # role -> mean outcome
    p_value: float | None = None  # always-valid p-value of B != A
    decision: Literal["running", "b-better", "a-better", "no-difference"] = "running"


class RolloutStatus(Strict):
    """A rollout in progress or finished, owned by the control plane (status is its record)."""

    strategy: Literal["canary", "ab", "bluegreen"]
    candidate: str = Field(description="The Model rolling out.")
    candidate_sha256: str | None = None
    stable: str | None = Field(
        default=None,
        description="The Model the candidate rolls out against (unset: spec.model).",
    )
    source: Literal["spec", "retrain"] = "spec"
    phase: Literal["Progressing", "WaitingForApproval", "Promoted", "RolledBack", "Concluded"] = (
        "Progressing"
    )
    generation: int | None = Field(
        default=None, description="The spec generation this rollout belongs to (source spec)."
    )
    step: int = 0  # canary: the step's index; bluegreen: 0 preview, 1 switched
    weight: int = 0  # percent of live traffic on the candidate now
    step_started_at: datetime | None = None
    message: str = ""
    ab: AbResult | None = None


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
        default_factory=dict,
        description="The latest drift score per watched feature (and `prediction`), any monitor.",
    )
    monitors: list[MonitorStatus] = Field(default_factory=list)
    rollout: RolloutStatus | None = None


class Deployment(Strict):
    api_version: Literal["aiml024.io/v1alpha1"] = API_VERSION
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus | None = None
