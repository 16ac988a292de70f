"""Rollouts as pure decisions (aiml024.reconcile.rollout), on a fake clock: canary steps,
promotion, SLO rollback, blue/green switch and switch-back, the A/B test and its statistics,
and the predictor plan following the rollout."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from aiml024.api import Deployment, Experiment, Model, SpecError, parse_object
from aiml024.api.deployment import AbResult, MonitorStatus, RolloutStatus
from aiml024.api.plan import traffic
from aiml024.compiler import compile_deployment
from aiml024.policy import GateResult
from aiml024.reconcile import deployment as deployment_rules
from aiml024.reconcile import model as model_rules
from aiml024.reconcile import rollout as rules
from aiml024.reconcile.slo import Counts, Observation, observed_between, runtime_metrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY = {"stable": Observation(40, 0.0), "canary": Observation(50, 0.0)}
SLOW = {"stable": Observation(40, 0.0), "canary": Observation(900, 0.0)}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def model(name: str, sha: str, stage: str = "production") -> Model:
    m = Model.model_validate({
        "metadata": {"name": name, "generation": 1},
        "spec": {"source": {"experiment": "churn"}, "task": "classification", "stage": stage},
        "status": {"artifactUri": f"file:///models/{name}", "sha256": sha, "stage": "staging"},
    })  # fmt: skip
    gate = GateResult(decision="allow", violations=[], bundle_digest="sha256:abc", stage=stage)
    m.status = model_rules.status_after_gate(m, gate, T0)
    return m


MODELS = {"v1": model("v1", "a" * 64), "v2": model("v2", "b" * 64)}


def deployment(
    strategy: dict[str, Any] | None = None, generation: int = 1, **spec: Any
) -> Deployment:
    return Deployment.model_validate({
        "metadata": {"name": "churn", "generation": generation},
        "spec": {"model": "v1", "strategy": strategy or {"type": "single"},
                 "slo": {"latencyP95Ms": 150, "errorRate": 0.01}, **spec},
    })  # fmt: skip


CANARY = {
    "type": "canary",
    "canary": {
        "model": "v2",
        "steps": [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}],
    },
}
BLUEGREEN = {"type": "bluegreen", "blueGreen": {"model": "v2", "previewSeconds": 30}}
AB = {"type": "ab", "ab": {"model": "v2", "weight": 30, "minSamples": 10, "maxSamples": 500}}


def started(dep: Deployment) -> RolloutStatus:
    rollout = rules.rollout_for(dep, MODELS, None, T0)
    assert rollout is not None and rollout.phase == "Progressing"
    return rollout


# --- which rollout ---------------------------------------------------------------------------


def test_no_rollout_for_single_or_shadow() -> None:
    assert rules.rollout_for(deployment(), MODELS, None, T0) is None
    shadow = deployment({"type": "shadow", "shadow": {"model": "v2"}})
    assert rules.rollout_for(shadow, MODELS, None, T0) is None


def test_a_rollout_is_kept_for_its_generation_and_restarts_with_a_new_one() -> None:
    dep = deployment(CANARY)
    rollout = started(dep)
    assert (rollout.strategy, rollout.candidate, rollout.source) == ("canary", "v2", "spec")
    assert (rollout.step, rollout.weight, rollout.generation) == (0, 10, 1)
    assert rollout.candidate_sha256 == "b" * 64 and rollout.step_started_at == T0
    moved = rollout.model_copy(update={"step": 1, "weight": 50})
    assert rules.rollout_for(dep, MODELS, moved, at(500)) == moved
    fresh = rules.rollout_for(deployment(CANARY, generation=2), MODELS, moved, at(500))
    assert fresh is not None and (fresh.step, fresh.weight, fresh.generation) == (0, 10, 2)
    assert fresh.step_started_at == at(500)


def test_a_candidate_that_may_not_serve_waits_for_approval_with_no_traffic() -> None:
    staging_only = {**MODELS, "v2": model("v2", "b" * 64, stage="staging")}
    dep = deployment(CANARY)
    waiting = rules.rollout_for(dep, staging_only, None, T0)
    assert waiting is not None and waiting.phase == "WaitingForApproval"
    assert (
        waiting.weight == 0 and "the deployment requires an allowed production" in waiting.message
    )
    plan = deployment_rules.plan_predictors(dep, staging_only, rollout=waiting)
    assert [(p.role, p.model.name, p.weight) for p in plan] == [("stable", "v1", 100)]
    missing = rules.rollout_for(dep, {"v1": MODELS["v1"]}, None, T0)
    assert missing is not None and "model v2 not found" in missing.message
    # Once approved, it starts from its first step.
    started_now = rules.rollout_for(dep, MODELS, waiting, at(90))
    assert started_now is not None and started_now.phase == "Progressing"
    assert (started_now.weight, started_now.step_started_at) == (10, at(90))


def test_a_retrain_rolls_out_as_a_canary_through_the_monitors_steps() -> None:
    monitor = {
        "name": "drift",
        "action": "retrain",
        "retrain": {"experiment": "churn", "dataUri": "s3://d/new.csv", "steps": [{"weight": 20}]},
    }
    dep = deployment(monitors=[monitor])
    rollout = rules.rollout_for(dep, MODELS, None, T0, retrain_candidate="v2")
    assert rollout is not None and (rollout.source, rollout.strategy) == ("retrain", "canary")
    assert rollout.weight == 20 and rollout.stable is None
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=rollout)
    assert [(p.role, p.model.name, p.weight) for p in plan] == [
        ("stable", "v1", 80),
        ("canary", "v2", 20),
    ]
    # kept across spec generations while the same candidate rolls out
    dep.metadata.generation = 2
    assert rules.rollout_for(dep, MODELS, rollout, at(10), retrain_candidate="v2") == rollout
    # once the spec names it, nothing rolls out
    adopted = deployment(model="v2", monitors=[monitor])
    assert rules.rollout_for(adopted, MODELS, rollout, at(10), retrain_candidate="v2") is None


def test_the_retrain_candidate_is_the_experiments_version_the_monitor_reran() -> None:
    monitor = {"name": "drift", "action": "retrain",
               "retrain": {"experiment": "churn", "dataUri": "s3://d/new.csv"}}  # fmt: skip
    dep = deployment(monitors=[monitor])
    exp = parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "churn", "generation": 3},
        "spec": {"task": "classification", "data": {"uri": "s3://d/new.csv"}, "target": "y",
                 "model": {"name": "churn-model"}},
    })  # fmt: skip
    assert isinstance(exp, Experiment)
    assert rules.retrain_candidate(dep, {"churn": exp}) is None
    dep.status = dep.status or deployment().status
    from aiml024.api import DeploymentStatus

    dep.status = DeploymentStatus(
        monitors=[MonitorStatus(name="drift", last_run=T0, retrained_generation=2)]
    )
    assert rules.retrain_candidate(dep, {"churn": exp}) == "churn-model-v2"


# --- canary steps ----------------------------------------------------------------------------


def test_canary_walks_its_steps_with_the_slo_met_and_is_promoted() -> None:
    dep = deployment(CANARY)
    rollout = started(dep)
    # A step needs its whole pause ...
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(30))
    assert (rollout.step, rollout.weight, events) == (0, 10, [])
    # ... and evidence: no observation of the candidate never completes a step.
    rollout, events = rules.advance(dep, rollout, {"stable": Observation(40, 0)}, at(61))
    assert (rollout.step, events) == (0, []) and "waiting for traffic" in rollout.message
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(61))
    assert (rollout.step, rollout.weight, rollout.step_started_at) == (1, 50, at(61))
    assert [e.reason for e in events] == ["RolloutStep"] and "10% to 50%" in events[0].message
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=rollout)
    assert plan.traffic() == {"stable": 50, "canary": 50} == traffic(dep, rollout=rollout)
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(100))
    assert rollout.phase == "Progressing" and events == []
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(121))
    assert (rollout.phase, rollout.weight) == ("Promoted", 100)
    assert [e.reason for e in events] == ["Promoted"]
    # Promoted: the candidate is the only live predictor, in role stable.
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=rollout)
    assert [(p.role, p.model.name, p.weight) for p in plan] == [("stable", "v2", 100)]
    assert plan.digests() == {"stable": "b" * 64}
    # A finished rollout stays as it is.
    assert rules.advance(dep, rollout, SLOW, at(500)) == (rollout, [])
    assert rules.rollout_for(dep, MODELS, rollout, at(500)) == rollout


def test_a_breach_rolls_back_to_zero_and_records_it() -> None:
    dep = deployment(CANARY)
    rollout, _ = rules.advance(dep, started(dep), HEALTHY, at(61))
    rolled, events = rules.advance(dep, rollout, SLOW, at(70))
    assert (rolled.phase, rolled.weight) == ("RolledBack", 0)
    assert [(e.reason, e.warning) for e in events] == [("RolledBack", True)]
    assert "canary p95 latency 900 ms" in (events[0].cause or "")
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=rolled)
    assert plan.rolled_back and plan.traffic() == {"stable": 100, "canary": 0}
    status = rules.status_after_rollout(
        dep, deployment_rules.deployment_status(dep, plan, "http://x", T0), rolled, events, SLOW,
        at(70),
    )  # fmt: skip
    assert status.rollout == rolled and status.traffic == {"stable": 100, "canary": 0}
    assert status.slo_state == "Breached" and status.last_rollback is not None
    assert status.last_rollback.at == at(70) and "900 ms" in status.last_rollback.reason
    cond = status.condition("RolledBack")
    assert cond is not None and cond.status == "True" and cond.observed_generation == 1


def test_a_breach_without_rollback_holds_the_step_and_restarts_its_clock() -> None:
    dep = deployment(CANARY)
    dep.spec.slo.rollback = False
    rollout, events = rules.advance(dep, started(dep), SLOW, at(61))
    assert (rollout.phase, rollout.step, rollout.step_started_at, events) == (
        "Progressing", 0, at(61), []
    )  # fmt: skip
    assert "slo.rollback is off" in rollout.message


def test_a_canary_without_steps_holds_its_weight() -> None:
    dep = deployment({"type": "canary", "canary": {"model": "v2", "weight": 20}})
    rollout = started(dep)
    assert rollout.weight == 20
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(10_000))
    assert (rollout.phase, rollout.weight, events) == ("Progressing", 20, [])
    assert rules.advance(dep, rollout, SLOW, at(10_001))[0].phase == "RolledBack"


def test_the_policy_must_allow_the_candidate_alone_before_promotion() -> None:
    dep = deployment(CANARY)
    rollout, _ = rules.advance(dep, started(dep), HEALTHY, at(61))
    held, events = rules.advance(dep, rollout, HEALTHY, at(200), candidate_allowed=False)
    assert (held.phase, events) == ("Progressing", []) and "does not allow" in held.message


def test_descending_steps_are_refused() -> None:
    bad = {"type": "canary", "canary": {"model": "v2", "steps": [{"weight": 50}, {"weight": 10}]}}
    with pytest.raises(SpecError, match="weights must ascend"):
        parse_object({"apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
                      "metadata": {"name": "d"}, "spec": {"model": "v1", "strategy": bad}})  # fmt: skip


# --- blue/green ------------------------------------------------------------------------------


def test_bluegreen_previews_then_switches_then_promotes() -> None:
    dep = deployment(BLUEGREEN)
    rollout = started(dep)
    assert (rollout.step, rollout.weight) == (0, 0)
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=rollout)
    assert [(p.role, p.model.name, p.weight) for p in plan] == [
        ("stable", "v1", 100),
        ("canary", "v2", 0),
    ]
    rollout, events = rules.advance(dep, rollout, {}, at(29))
    assert (rollout.step, events) == (0, [])
    rollout, events = rules.advance(dep, rollout, {}, at(30))
    assert (rollout.step, rollout.weight) == (1, 100) and [e.reason for e in events] == ["Switched"]
    assert traffic(dep, rollout=rollout) == {"stable": 0, "canary": 100}
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(45))
    assert rollout.phase == "Progressing"
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(60))
    assert rollout.phase == "Promoted" and [e.reason for e in events] == ["Promoted"]


def test_bluegreen_switches_back_on_a_breach_after_the_switch() -> None:
    dep = deployment(BLUEGREEN)
    switched, _ = rules.advance(dep, started(dep), {}, at(30))
    back, events = rules.advance(dep, switched, SLOW, at(40))
    assert (back.phase, back.weight) == ("RolledBack", 0)
    assert traffic(dep, rollout=back) == {"stable": 100, "canary": 0}
    assert [e.reason for e in events] == ["RolledBack"]


# --- A/B -------------------------------------------------------------------------------------


def test_ab_keeps_the_split_and_follows_the_test() -> None:
    dep = deployment(AB)
    rollout = started(dep)
    assert rollout.weight == 30 and rollout.ab == AbResult()
    assert traffic(dep, rollout=rollout) == {"stable": 70, "canary": 30}
    running = AbResult(samples={"stable": 5, "canary": 5}, decision="running")
    rollout, events = rules.advance(dep, rollout, HEALTHY, at(10), ab=running)
    assert (rollout.phase, rollout.ab, events) == ("Progressing", running, [])
    better = AbResult(samples={"stable": 900, "canary": 400}, p_value=0.001, decision="b-better")
    promoted, events = rules.advance(dep, rollout, HEALTHY, at(20), ab=better)
    assert promoted.phase == "Promoted" and [e.reason for e in events] == ["Promoted"]
    kept, events = rules.advance(dep, rollout, HEALTHY, at(20), ab=better, candidate_allowed=False)
    assert (kept.phase, kept.weight) == ("Concluded", 0) and "policy" in kept.message
    for decision in ("a-better", "no-difference"):
        result = better.model_copy(update={"decision": decision})
        concluded, events = rules.advance(dep, rollout, HEALTHY, at(20), ab=result)
        assert (concluded.phase, concluded.weight) == ("Concluded", 0)
        assert [e.reason for e in events] == ["Concluded"]
        assert traffic(dep, rollout=concluded) == {"stable": 100, "canary": 0}
    no_promote = deployment({**AB, "ab": {**AB["ab"], "promote": False}})
    assert rules.advance(no_promote, rollout, HEALTHY, at(20), ab=better)[0].phase == "Concluded"


def test_ab_outcomes_join_feedback_to_the_logged_requests() -> None:
    requests = [
        {"id": "1", "role": "stable"},
        {"id": "2", "role": "canary"},
        {"id": "3", "role": "shadow"},
        {"id": "4", "role": "canary"},
        {"id": 5, "role": "stable"},
    ]
    feedback = [
        {"id": "1", "outcome": True},
        {"id": "2", "outcome": "1"},
        {"id": "2", "outcome": 0},  # one outcome per id: the first
        {"id": "3", "outcome": 1},  # a shadow's copy is not a variant
        {"id": "9", "outcome": 1},  # unknown
        {"id": "4", "outcome": "false"},
        {"id": "5", "outcome": "true"},
        {"id": "1", "outcome": False},
    ]
    assert rules.ab_outcomes(requests, feedback) == ([1.0, 1.0], [1.0, 0.0])


def _bernoulli(rng: random.Random, p: float, n: int) -> list[float]:
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def _peeking(
    a: list[float], b: list[float], every: int, alpha: float, min_samples: int, max_samples: int
) -> AbResult:
    """Look after every `every` outcomes per arm, as a control plane ticking would."""
    result = None
    for n in range(every, max_samples + every, every):
        result = rules.ab_test(a[:n], b[:n], alpha, min_samples, max_samples, previous=result)
        if result.decision != "running":
            return result
    assert result is not None
    return result


def test_peeking_after_every_20_outcomes_keeps_false_positives_within_alpha() -> None:
    """A/A: 300 runs, a look after every 20 outcomes per arm up to 1000: the share of runs
    that ever declare a difference stays within alpha (plus binomial slack)."""
    rng = random.Random(7)
    alpha, runs = 0.05, 300
    false_positives = 0
    for _ in range(runs):
        a, b = _bernoulli(rng, 0.3, 1000), _bernoulli(rng, 0.3, 1000)
        result = _peeking(a, b, 20, alpha, 100, 1000)
        false_positives += result.decision in ("a-better", "b-better")
    slack = 2 * (alpha * (1 - alpha) / runs) ** 0.5
    assert false_positives / runs <= alpha + slack
    # The same peeking at a fixed-horizon z-test (|z| > 1.96) declares far more.
    rng = random.Random(7)
    naive = 0
    for _ in range(runs):
        a, b = _bernoulli(rng, 0.3, 1000), _bernoulli(rng, 0.3, 1000)
        for n in range(100, 1001, 20):
            pooled = (sum(a[:n]) + sum(b[:n])) / (2 * n)
            z = (sum(b[:n]) - sum(a[:n])) / n / max(1e-9, (pooled * (1 - pooled) * 2 / n) ** 0.5)
            if abs(z) > 1.96:
                naive += 1
                break
    assert naive / runs > 2 * alpha > false_positives / runs


def test_a_real_effect_is_detected_well_before_max_samples() -> None:
    rng = random.Random(11)
    detected_at = []
    for _ in range(20):
        a, b = _bernoulli(rng, 0.30, 10_000), _bernoulli(rng, 0.40, 10_000)
        result = _peeking(a, b, 20, 0.05, 100, 10_000)
        assert result.decision == "b-better"
        detected_at.append(result.samples["canary"])
        assert result.p_value is not None and result.p_value <= 0.05
        assert result.means["canary"] > result.means["stable"]
    assert max(detected_at) < 2_000  # a fifth of max_samples at most
    worse = rules.ab_test(_bernoulli(rng, 0.4, 3000), _bernoulli(rng, 0.3, 3000), 0.05, 100, 10_000)
    assert worse.decision == "a-better"


def test_no_difference_at_max_samples() -> None:
    rng = random.Random(3)
    a, b = _bernoulli(rng, 0.3, 400), _bernoulli(rng, 0.3, 400)
    result = _peeking(a, b, 20, 0.05, 100, 400)
    assert result.decision == "no-difference" and result.samples == {"stable": 400, "canary": 400}
    assert rules.ab_test(a[:50], b[:50], 0.05, 100, 400).decision == "running"
    assert rules.ab_test(a[:50], b[:50], 0.05, 100, 400).p_value is None


# --- runtime metrics ---------------------------------------------------------------------------


def _exposition(stable: list[tuple[float, int]], canary: list[tuple[float, int]]) -> str:
    registry = CollectorRegistry()
    requests = Counter(
        "aiml024_requests", "requests", ["deployment", "model", "role", "endpoint", "code"],
        registry=registry,
    )  # fmt: skip
    latency = Histogram(
        "aiml024_request_seconds", "latency", ["deployment", "model", "role", "endpoint"],
        registry=registry, buckets=(0.05, 0.1, 0.25, 0.5, 1.0),
    )  # fmt: skip
    for role, model_name, served in (("stable", "v1", stable), ("canary", "v2", canary)):
        for seconds, code in served:
            requests.labels("churn", model_name, role, "predict", str(code)).inc()
            latency.labels("churn", model_name, role, "predict").observe(seconds)
    requests.labels("other", "x", "stable", "predict", "500").inc()  # another deployment
    return generate_latest(registry).decode()


def test_runtime_metrics_and_the_window_between_two_scrapes() -> None:
    first = _exposition([(0.02, 200)] * 10, [(0.02, 200)] * 10)
    before = runtime_metrics(first, deployment="churn")
    assert before["stable"].total == 10 and before["canary"].errors == 0
    assert before["canary"].buckets[0.05] == 10 and before["canary"].buckets[float("inf")] == 10
    second = _exposition(
        [(0.02, 200)] * 30, [(0.02, 200)] * 10 + [(0.4, 200)] * 18 + [(0.4, 503)] * 2
    )
    after = runtime_metrics(second, deployment="churn")
    observed = observed_between(before, after)
    assert observed["stable"].error_rate == 0 and observed["stable"].latency_p95_ms is not None
    assert observed["stable"].latency_p95_ms <= 50
    canary = observed["canary"]
    assert canary.error_rate == pytest.approx(0.1)
    assert canary.latency_p95_ms is not None and 250 < canary.latency_p95_ms <= 500
    # Nothing served in the window: no observation. A restart counts from zero.
    assert observed_between(after, after) == {}
    restarted = observed_between(after, before)
    assert restarted["canary"].error_rate == 0
    assert runtime_metrics(first)["stable"].errors == 1  # every deployment's without a filter
    assert observed_between({}, {"canary": Counts({float("inf"): 0}, 0, 0)}) == {}


def test_the_compiler_serves_the_rollouts_plan() -> None:
    dep = deployment(BLUEGREEN)
    plan = deployment_rules.plan_predictors(dep, MODELS, rollout=started(dep))
    seldon = compile_deployment(dep, plan)[0]
    assert [(p["name"], p["traffic"]) for p in seldon["spec"]["predictors"]] == [
        ("stable", 100),
        ("canary", 0),
    ]


def test_the_deployment_policy_judges_the_rollouts_plan() -> None:
    """A candidate waiting for approval is not judged as if it served (the stable serves on);
    a promoted candidate is judged alone."""
    from aiml024.policy import default_policy_dir, deployment_input, evaluate_deployment

    staging_only = {**MODELS, "v2": model("v2", "b" * 64, stage="staging")}
    dep = deployment(CANARY)
    for models, rollout in (
        (staging_only, rules.rollout_for(dep, staging_only, None, T0)),
        (MODELS, started(dep).model_copy(update={"phase": "Promoted", "weight": 100})),
    ):
        subject = deployment_rules.policy_subject(dep, rollout)
        routed = deployment_rules.routed_models(dep, models, rollout)
        gate = evaluate_deployment(deployment_input(subject, routed, {}), default_policy_dir())
        assert gate.decision == "allow", gate.violations
        assert len(routed) == 1
