"""Rollouts: canary steps, blue/green, A/B with a sequential test, SLO rollback. Pure
decisions both control planes use (docs/CONTRACTS.md "Rollouts"); the caller observes, acts
(moves traffic, re-serves the plan), records status, events and audit entries, and supplies
the clock.

The state lives in `DeploymentStatus.rollout` (`api.deployment.RolloutStatus`), written only
by a control plane. Each reconcile asks `rollout_for` which rollout this generation of the spec
(or a retrain) asks for, and each tick `advance`s it on what was observed; the predictor plan
follows it (`reconcile.deployment.plan_predictors(..., rollout=)`, `api.plan.planned_routes`).

Phases: WaitingForApproval (the candidate may not serve at spec.requireStage: it gets no
traffic) -> Progressing -> Promoted (the candidate alone serves, as stable) | RolledBack (an SLO
breach of the candidate: 0 %) | Concluded (an A/B test that did not promote B: B at 0 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api import Deployment, DeploymentStatus, Experiment, Model
from ..api.deployment import AbResult, AbTest, CanaryStep, Retrain, RolloutStatus
from ..api.plan import traffic as planned_traffic
from .deployment import servable_problem
from .experiment import model_version_name
from .slo import (
    ROLLED_BACK,
    Breach,
    Observation,
    candidate_breach,
    rolled_back,
    status_after_slo,
)

ACTIVE = ("Progressing", "WaitingForApproval")
FINISHED = ("Promoted", "RolledBack", "Concluded")
# Outcomes per variant of the mixture's prior: N(0, (MIXING_SD * sigma)^2) over the difference.
MIXING_SD = 0.1


@dataclass(frozen=True)
class RolloutEvent:
    """What a transition tells the user (an Event; an audit entry for Promoted, RolledBack and
    Concluded). `cause`: the SLO breach behind a RolledBack."""

    reason: str  # RolloutStep, Switched, Promoted, RolledBack, Concluded
    message: str
    warning: bool = False
    cause: str | None = None


# --- which rollout ---------------------------------------------------------------------------


def retrain_candidate(dep: Deployment, experiments: Mapping[str, Experiment]) -> str | None:
    """The Model version the newest retrain registers (or will): `<model>-v<N>` of the
    Experiment a monitor with `action: retrain` reran at generation N
    (`MonitorStatus.retrainedGeneration`); None when no retrain ran or it is spec.model."""
    statuses = {s.name: s for s in (dep.status.monitors if dep.status else [])}
    for monitor in dep.spec.monitors:
        status = statuses.get(monitor.name)
        if monitor.action != "retrain" or monitor.retrain is None or status is None:
            continue
        exp = experiments.get(monitor.retrain.experiment)
        if exp is None or not status.retrained_generation:
            continue
        at = exp.model_copy(deep=True)
        at.metadata.generation = status.retrained_generation
        name = model_version_name(at)
        if name != dep.spec.model:
            return name
    return None


def _wanted(dep: Deployment, retrain: str | None) -> tuple[str, str, str] | None:
    """(strategy, candidate, source) this spec asks for; the spec's own strategy first."""
    strategy = dep.spec.strategy
    if strategy.type == "canary" and strategy.canary is not None:
        return "canary", strategy.canary.model, "spec"
    if strategy.type == "ab" and strategy.ab is not None:
        return "ab", strategy.ab.model, "spec"
    if strategy.type == "bluegreen" and strategy.blue_green is not None:
        return "bluegreen", strategy.blue_green.model, "spec"
    if retrain and retrain != dep.spec.model:
        return "canary", retrain, "retrain"
    return None


def _serving_stable(dep: Deployment, previous: RolloutStatus | None) -> str | None:
    """The Model a new retrain rollout goes against: the one a previous retrain promoted, else
    spec.model (None)."""
    if previous is None or previous.source != "retrain":
        return None
    if previous.phase == "Promoted":
        return previous.candidate
    return previous.stable


def rollout_for(
    dep: Deployment,
    models: Mapping[str, Model],
    previous: RolloutStatus | None,
    now: datetime,
    retrain_candidate: str | None = None,
) -> RolloutStatus | None:
    """The rollout this generation of the spec asks for (strategy canary, ab or bluegreen;
    candidate: the strategy's model; source spec), or, on a spec without one, the canary of
    `retrain_candidate` through the retrain monitor's steps (source retrain). `previous` (the
    status' rollout) is kept while it is the same rollout: same generation for the spec's, same
    candidate for a retrain's; otherwise it restarts. An active rollout whose candidate may not
    serve at spec.requireStage waits (WaitingForApproval, no traffic), and starts when it may.
    None: nothing rolls out."""
    wanted = _wanted(dep, retrain_candidate)
    if wanted is None:
        return None
    strategy, candidate, source = wanted
    generation = dep.metadata.generation or 1
    same = (
        previous is not None
        and (previous.strategy, previous.candidate, previous.source) == wanted
        and (source == "retrain" or previous.generation == generation)
    )
    if previous is not None and same:
        rollout = previous.model_copy(deep=True)
        if rollout.phase not in ACTIVE:
            return rollout
        problem = _candidate_problem(dep, models, candidate)
        if problem:
            return _waiting(rollout, problem)
        if rollout.phase == "WaitingForApproval":
            return _started(dep, rollout, models, now)
        return rollout
    rollout = RolloutStatus(
        strategy=strategy,
        candidate=candidate,
        source=source,
        generation=generation,
        stable=_serving_stable(dep, previous) if source == "retrain" else None,
    )
    if source == "spec" and previous is None and rolled_back(dep):
        # Rolled back in this generation before the rollout was recorded: it stays so.
        rollout.phase, rollout.message = "RolledBack", "rolled back earlier in this generation"
        return rollout
    problem = _candidate_problem(dep, models, candidate)
    if problem:
        return _waiting(rollout, problem)
    return _started(dep, rollout, models, now)


def _candidate_problem(dep: Deployment, models: Mapping[str, Model], name: str) -> str | None:
    model = models.get(name)
    if model is None:
        return f"model {name} not found"
    return servable_problem(model, dep.spec.require_stage)


def _waiting(rollout: RolloutStatus, problem: str) -> RolloutStatus:
    rollout.phase, rollout.weight, rollout.step = "WaitingForApproval", 0, 0
    rollout.step_started_at = None
    rollout.message = f"{rollout.candidate} waits to serve: {problem}"
    return rollout


def _started(
    dep: Deployment, rollout: RolloutStatus, models: Mapping[str, Model], now: datetime
) -> RolloutStatus:
    model = models[rollout.candidate]
    rollout.candidate_sha256 = model.status.sha256 if model.status else None
    rollout.phase, rollout.step, rollout.step_started_at = "Progressing", 0, now
    if rollout.strategy == "ab":
        rollout.weight = _ab_spec(dep).weight
        rollout.ab = AbResult()
        rollout.message = f"A/B test: {rollout.weight}% of live traffic to {rollout.candidate}"
    elif rollout.strategy == "bluegreen":
        rollout.weight = 0
        rollout.message = f"preview: {rollout.candidate} serves beside the stable Model, no traffic"
    else:
        steps = steps_of(dep, rollout)
        canary = dep.spec.strategy.canary
        rollout.weight = steps[0].weight if steps else (canary.weight if canary else 0)
        rollout.message = _step_message(rollout, steps)
    return rollout


def steps_of(dep: Deployment, rollout: RolloutStatus) -> list[CanaryStep]:
    """The canary steps a canary rollout walks: the spec's, or the retrain monitor's."""
    if rollout.source == "retrain":
        for monitor in dep.spec.monitors:
            if monitor.action == "retrain" and monitor.retrain is not None:
                return list(monitor.retrain.steps)
        return list(Retrain.model_fields["steps"].get_default(call_default_factory=True))
    canary = dep.spec.strategy.canary
    return list(canary.steps) if canary else []


def _ab_spec(dep: Deployment) -> AbTest:
    ab = dep.spec.strategy.ab
    assert ab is not None, "an ab rollout comes from strategy.ab"
    return ab


def _step_message(rollout: RolloutStatus, steps: Sequence[CanaryStep]) -> str:
    if not steps:
        return f"{rollout.weight}% of live traffic to {rollout.candidate} until the spec changes"
    return (
        f"step {rollout.step + 1} of {len(steps)}: {rollout.weight}% of live traffic to "
        f"{rollout.candidate}, held {steps[rollout.step].pause_seconds} s with the SLO met"
    )


# --- one tick --------------------------------------------------------------------------------


def advance(
    dep: Deployment,
    rollout: RolloutStatus,
    observed: Mapping[str, Observation],
    now: datetime,
    ab: AbResult | None = None,
    candidate_allowed: bool = True,
) -> tuple[RolloutStatus, list[RolloutEvent]]:
    """The rollout after one look at what was observed (role -> Observation over the SLO
    window; the candidate is role `canary`), with the A/B test's state (`ab_test`) for an ab
    rollout, and whether the deployment policy allows the candidate as the only Model
    (`candidate_allowed`: else it is never promoted). Only a Progressing rollout moves; no
    observation of the candidate never completes a step."""
    if rollout.phase != "Progressing":
        return rollout, []
    r = rollout.model_copy(deep=True)
    slo = dep.spec.slo
    breach = candidate_breach(slo, {"stable": 100 - r.weight, "canary": r.weight}, observed)
    if breach is not None and slo.rollback:
        return _rolled_back(r, breach)
    if r.strategy == "ab":
        return _advance_ab(dep, r, breach, ab, candidate_allowed, now)
    if r.strategy == "bluegreen":
        return _advance_bluegreen(dep, r, breach, observed, now, candidate_allowed)
    return _advance_canary(dep, r, breach, observed, now, candidate_allowed)


def _rolled_back(r: RolloutStatus, breach: Breach) -> tuple[RolloutStatus, list[RolloutEvent]]:
    before = r.weight
    r.phase, r.weight = "RolledBack", 0
    r.message = f"rolled back from {before}%: {breach.reason}"
    event = RolloutEvent(
        ROLLED_BACK, f"traffic moved back to stable: {breach.reason}", True, breach.reason
    )
    return r, [event]


def _promoted(
    r: RolloutStatus, now: datetime, why: str
) -> tuple[RolloutStatus, list[RolloutEvent]]:
    r.phase, r.weight, r.step_started_at = "Promoted", 100, now
    r.message = f"{r.candidate} promoted: it serves all live traffic as stable ({why})"
    return r, [RolloutEvent("Promoted", r.message)]


def _held(r: RolloutStatus, now: datetime, breach: Breach | None) -> bool:
    """On a breach the candidate may not be rolled back for (slo.rollback false), the step's
    clock restarts: a step needs its whole pause with the SLO met."""
    if breach is None:
        return False
    r.step_started_at = now
    r.message = f"holds at {r.weight}%: {breach.reason} (slo.rollback is off)"
    return True


def _elapsed(r: RolloutStatus, now: datetime) -> float:
    return (now - (r.step_started_at or now)).total_seconds()


def _advance_canary(
    dep: Deployment,
    r: RolloutStatus,
    breach: Breach | None,
    observed: Mapping[str, Observation],
    now: datetime,
    allowed: bool,
) -> tuple[RolloutStatus, list[RolloutEvent]]:
    steps = steps_of(dep, r)
    if _held(r, now, breach):
        return r, []
    if not steps:
        r.message = _step_message(r, steps)
        return r, []
    step = steps[min(r.step, len(steps) - 1)]
    if observed.get("canary") is None:
        r.message = _step_message(r, steps) + "; waiting for traffic to the candidate"
        return r, []
    if _elapsed(r, now) < step.pause_seconds:
        r.message = _step_message(r, steps)
        return r, []
    if r.step + 1 < len(steps):
        before = r.weight
        r.step += 1
        r.weight, r.step_started_at = steps[r.step].weight, now
        r.message = _step_message(r, steps)
        message = f"{r.candidate} from {before}% to {r.weight}% (step {r.step + 1} of {len(steps)})"
        return r, [RolloutEvent("RolloutStep", message)]
    if not allowed:
        r.message = f"all {len(steps)} steps done; the policy does not allow {r.candidate} alone"
        return r, []
    return _promoted(r, now, f"{len(steps)} canary steps within the SLO")


def _advance_bluegreen(
    dep: Deployment,
    r: RolloutStatus,
    breach: Breach | None,
    observed: Mapping[str, Observation],
    now: datetime,
    allowed: bool,
) -> tuple[RolloutStatus, list[RolloutEvent]]:
    blue_green = dep.spec.strategy.blue_green
    preview = blue_green.preview_seconds if blue_green else 0
    if _held(r, now, breach):
        return r, []
    elapsed = _elapsed(r, now)
    if r.step == 0:
        if elapsed < preview:
            r.message = f"preview: {r.candidate} ready beside stable, no traffic, for {preview} s"
            return r, []
        if not allowed:
            r.message = f"preview done; the policy does not allow {r.candidate} alone"
            return r, []
        r.step, r.weight, r.step_started_at = 1, 100, now
        r.message = (
            f"switched: {r.candidate} takes all live traffic; stable stays ready {preview} s"
        )
        return r, [RolloutEvent("Switched", f"switched all live traffic to {r.candidate}")]
    if observed.get("canary") is None:
        r.message = f"switched to {r.candidate}; waiting for traffic to judge it"
        return r, []
    if elapsed < preview:
        r.message = f"switched to {r.candidate}; promoted after {preview} s with the SLO met"
        return r, []
    return _promoted(r, now, f"SLO met for {preview} s after the switch")


def _advance_ab(
    dep: Deployment,
    r: RolloutStatus,
    breach: Breach | None,
    ab: AbResult | None,
    allowed: bool,
    now: datetime,
) -> tuple[RolloutStatus, list[RolloutEvent]]:
    spec = _ab_spec(dep)
    if ab is not None:
        r.ab = ab
    result = r.ab or AbResult()
    p = f"p = {result.p_value:.3g}" if result.p_value is not None else "p not yet computed"
    counts = ", ".join(f"{role} {n}" for role, n in sorted(result.samples.items())) or "none"
    if result.decision == "running":
        r.message = f"A/B test running: outcomes {counts}; {p}"
        if breach is not None:
            r.message += f"; {breach.reason} (slo.rollback is off)"
        return r, []
    if result.decision == "b-better" and spec.promote and allowed:
        return _promoted(r, now, f"A/B test: B is better, {p}")
    why = {
        "b-better": f"B is better ({p}) but "
        + ("ab.promote is false" if not spec.promote else "the policy does not allow it alone"),
        "a-better": f"A is better ({p})",
        "no-difference": f"no difference after {counts} outcomes",
    }[result.decision]
    r.phase, r.weight, r.step_started_at = "Concluded", 0, now
    r.message = f"A/B test concluded: {why}; all live traffic to stable"
    return r, [RolloutEvent("Concluded", r.message)]


# --- the sequential A/B test -----------------------------------------------------------------


def ab_test(
    a: Sequence[float],
    b: Sequence[float],
    alpha: float = 0.05,
    min_samples: int = 100,
    max_samples: int = 100_000,
    previous: AbResult | None = None,
    mixing_sd: float = MIXING_SD,
) -> AbResult:
    """A mixture sequential probability ratio test (mSPRT; Johari, Pekelis, Walsh 2017,
    "Always valid inference") of H0: mean(B) = mean(A), on the outcomes in arrival order
    (higher is better; A = stable, B = canary), each arm cut at `max_samples`.

    With n_A, n_B outcomes, the difference of means d has variance V = s^2 (1/n_A + 1/n_B)
    (s^2: the pooled sample variance); under a normal mixture N(0, tau^2) over the true
    difference (tau = mixing_sd * s) the likelihood ratio against H0 is
        L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))),
    a martingale under H0, so 1/L, kept as the running minimum over every look
    (`previous`: the last look's result), is an always-valid p-value: looking after every
    outcome does not inflate the false-positive rate beyond `alpha`. Decision once both arms
    have `min_samples`: p <= alpha -> b-better or a-better (by the means); both arms at
    `max_samples` -> no-difference; else running. A decided result is final."""
    if previous is not None and previous.decision != "running":
        return previous
    xs, ys = list(a)[:max_samples], list(b)[:max_samples]
    n_a, n_b = len(xs), len(ys)
    means = {}
    if n_a:
        means["stable"] = math.fsum(xs) / n_a
    if n_b:
        means["canary"] = math.fsum(ys) / n_b
    result = AbResult(samples={"stable": n_a, "canary": n_b}, means=means)
    if previous is not None:
        result.p_value = previous.p_value
    if min(n_a, n_b) < min_samples or min(n_a, n_b) < 2:
        return result
    mean_a, mean_b = means["stable"], means["canary"]
    squares = math.fsum((x - mean_a) ** 2 for x in xs) + math.fsum((y - mean_b) ** 2 for y in ys)
    variance = squares / (n_a + n_b - 2)
    p_now = _mixture_p(mean_b - mean_a, variance, n_a, n_b, mixing_sd)
    p_value = min(p_now, result.p_value) if result.p_value is not None else p_now
    result.p_value = p_value
    if p_value <= alpha:
        result.decision = "b-better" if mean_b > mean_a else "a-better"
    elif min(n_a, n_b) >= max_samples:
        result.decision = "no-difference"
    return result


def _mixture_p(difference: float, variance: float, n_a: int, n_b: int, mixing_sd: float) -> float:
    if variance <= 0:  # every outcome the same within each arm
        return 1.0 if difference == 0 else 0.0
    v = variance * (1 / n_a + 1 / n_b)
    tau2 = (mixing_sd**2) * variance
    log_l = 0.5 * math.log(v / (v + tau2)) + tau2 * difference**2 / (2 * v * (v + tau2))
    return min(1.0, math.exp(-log_l)) if log_l > -700 else 1.0


def _outcome(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes"):
            return 1.0
        if text in ("false", "no"):
            return 0.0
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def ab_outcomes(
    requests: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]]
) -> tuple[list[float], list[float]]:
    """(A, B): the outcomes clients reported (`{"id", "outcome"}` feedback records) joined to
    the logged requests (`{"id", "role", ...}`: role stable is A, canary is B; shadow copies and
    unknown ids are left out), in feedback order, the first usable outcome per id. Booleans
    and "true"/"false"/"yes"/"no"/numbers as strings count as 1.0/0.0/the number."""
    role_of: dict[str, str] = {}
    for record in requests:
        rid, role = record.get("id"), record.get("role")
        if rid is not None and role in ("stable", "canary"):
            role_of.setdefault(str(rid), str(role))
    a: list[float] = []
    b: list[float] = []
    seen: set[str] = set()
    for record in feedback:
        rid = record.get("id")
        key = str(rid) if rid is not None else None
        if key is None or key in seen or key not in role_of:
            continue
        value = _outcome(record.get("outcome"))
        if value is None:
            continue
        seen.add(key)
        (a if role_of[key] == "stable" else b).append(value)
    return a, b


# --- what a rollout does to status -----------------------------------------------------------


def status_after_rollout(
    dep: Deployment,
    status: DeploymentStatus,
    rollout: RolloutStatus | None,
    events: Sequence[RolloutEvent],
    observed: Mapping[str, Observation],
    now: datetime,
) -> DeploymentStatus:
    """`status` with `rollout` recorded, its planned traffic, and the SLO
    state: on a RolledBack event the rollback (slo_state Breached, lastRollback, the
    RolledBack condition, as reconcile.slo.status_after_slo records it); else Met when the
    window saw traffic and the rollout was not rolled back."""
    status = status.model_copy(deep=True)
    status.rollout = rollout
    rollback = next((e for e in events if e.reason == ROLLED_BACK), None)
    if rollback is not None:
        breach = Breach("canary", rollback.cause or rollback.message)
        return status_after_slo(dep, status, breach, observed, now)
    status.traffic = planned_traffic(dep, rollout=rollout)
    if rollout is not None and rollout.phase == "RolledBack":
        return status
    if status.slo_state == "Breached":  # an earlier rollout's: this one starts afresh
        status.slo_state = "Unknown"
    return status_after_slo(dep, status, None, observed, now)
