"""The pure decisions both control planes share."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aiml024.api import Deployment, Experiment, Model, SpecError
from aiml024.api.plan import traffic
from aiml024.compiler import compile_deployment
from aiml024.policy import GateResult
from aiml024.reconcile import approvals as approval_rules
from aiml024.reconcile import deployment as deployment_rules
from aiml024.reconcile import experiment as experiment_rules
from aiml024.reconcile import model as model_rules

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def experiment(generation: int = 1) -> Experiment:
    return Experiment.model_validate({
        "metadata": {"name": "churn", "generation": generation},
        "spec": {"task": "classification", "data": {"uri": "s3://b/churn.csv"}, "target": "churned",
                 "search": {"trials": 40}},
    })  # fmt: skip


def node(name: str, phase: str, result: dict | None = None, message: str | None = None) -> dict:
    outputs = {"parameters": [{"name": "result", "value": json.dumps(result)}]} if result else {}
    return {
        "displayName": name,
        "type": "Pod",
        "phase": phase,
        "outputs": outputs,
        "message": message,
    }


SEARCH = {
    "trialsCompleted": 17, "bestValue": 0.86,
    "bestTrial": {"number": 9, "learner": "lightgbm", "value": 0.86, "params": {"num_leaves": 31}},
    "leaderboard": [
        {"rank": 1, "name": "ensemble", "learner": "ensemble", "value": 0.87, "members": ["lightgbm#9", "xgboost#4"], "weights": [0.6, 0.4]},
        {"rank": 2, "name": "lightgbm", "learner": "lightgbm", "value": 0.86, "trial": 9, "params": {"num_leaves": 31}},
    ],
}  # fmt: skip


def test_running_workflow_shows_progress_and_not_ready() -> None:
    status = experiment_rules.experiment_status(
        experiment(), "churn-g1", {"phase": "Running", "nodes": {}}, T0, progress=(5, 0.84)
    )
    assert status.phase == "Running"
    assert (status.trials_completed, status.trials_total, status.best_value) == (5, 40, 0.84)
    assert status.metric == "auc"
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "False" and ready.reason == "Training"


def test_search_result_fills_best_trial_and_a_short_leaderboard() -> None:
    wf = {"phase": "Running", "nodes": {"a": node("search", "Succeeded", SEARCH)}}
    status = experiment_rules.experiment_status(experiment(), "churn-g1", wf, T0)
    assert status.trials_completed == 17 and status.best_value == 0.86
    assert status.best_trial is not None and status.best_trial.learner == "lightgbm"
    assert [(e.name, e.members) for e in status.leaderboard] == [
        ("ensemble", ["lightgbm#9", "xgboost#4"]), ("lightgbm", []),
    ]  # fmt: skip


def test_failure_names_the_step_and_its_message() -> None:
    wf = {
        "phase": "Failed",
        "nodes": {"a": node("validate", "Failed", message="target column 'y' not found")},
    }
    status = experiment_rules.experiment_status(experiment(), "churn-g1", wf, T0)
    assert status.phase == "Failed"
    assert status.message == "step validate failed: target column 'y' not found"
    assert status.condition("Ready").reason == "WorkflowFailed"  # type: ignore[union-attr]


def test_condition_transition_time_is_kept_while_status_is_unchanged() -> None:
    exp = experiment()
    first = experiment_rules.experiment_status(exp, "churn-g1", {"phase": "Running"}, T0)
    exp.status = first
    later = experiment_rules.experiment_status(
        exp, "churn-g1", {"phase": "Running"}, T0 + timedelta(minutes=5)
    )
    assert later.condition("Ready").last_transition_time == T0  # type: ignore[union-attr]
    exp.status = later
    done = experiment_rules.experiment_status(
        exp, "churn-g1", {"phase": "Succeeded"}, T0 + timedelta(minutes=9)
    )
    assert done.condition("Ready").last_transition_time == T0 + timedelta(minutes=9)  # type: ignore[union-attr]


def test_invalid_spec_is_a_permanent_ready_false() -> None:
    status = experiment_rules.invalid_spec_status(
        experiment(3), "spec.task: forecasting is not supported", T0
    )
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == "InvalidSpec" and status.observed_generation == 3


def model(
    stage: str = "production", owner: str = "alice", sha: str = "a" * 64, at: str = "staging"
) -> Model:
    return Model.model_validate({
        "metadata": {"name": "churn-model", "generation": 1},
        "spec": {"source": {"experiment": "churn"}, "task": "classification", "stage": stage, "owner": owner},
        "status": {"artifactUri": "file:///a/bundle", "sha256": sha, "stage": at},
    })  # fmt: skip


def decided(m: Model, decision: str = "allow", stage: str = "production") -> Model:
    """`m` as the control plane leaves it after the gate decided `decision` for `stage`."""
    m = m.model_copy(deep=True)
    m.spec.stage = stage  # type: ignore[assignment]
    m.status = model_rules.status_after_gate(m, gate(decision, stage=stage), T0)
    return m


def gate(
    decision: str, violations: list[str] | None = None, stage: str = "production"
) -> GateResult:
    return GateResult(
        decision=decision, violations=violations or [], bundle_digest="sha256:abc", stage=stage
    )


def test_allow_moves_the_stage_and_deny_does_not() -> None:
    allowed = model_rules.status_after_gate(model(), gate("allow"), T0)
    assert allowed.stage == "production" and allowed.phase == "Production"
    denied = model_rules.status_after_gate(
        model(), gate("deny", ["metric_below_threshold: auc 0.61 < 0.70"]), T0
    )
    assert denied.stage == "staging" and denied.phase == "Denied"
    assert denied.policy is not None and denied.policy.violations == [
        "metric_below_threshold: auc 0.61 < 0.70"
    ]
    promoted = denied.condition("Promoted")
    assert (
        promoted is not None
        and promoted.reason == "PolicyDenied"
        and "auc 0.61" in promoted.message
    )


def test_require_approval_waits() -> None:
    waiting = model_rules.status_after_gate(
        model(), gate("require_approval", ["approval_required: ..."]), T0
    )
    assert waiting.stage == "staging" and waiting.phase == "PendingApproval"


def test_four_eyes() -> None:
    assert "cannot approve it" in (
        approval_rules.approval_problem(model(owner="alice"), "Alice", "production", []) or ""
    )
    assert approval_rules.approval_problem(model(owner="alice"), "bob", "production", []) is None


def test_a_stage_comes_down_when_the_policy_no_longer_allows_it() -> None:
    production = model(at="production")
    for decision in ("deny", "require_approval"):
        after = model_rules.status_after_gate(production, gate(decision), T0)
        assert after.stage == "staging", decision
    staging_denied = model_rules.status_after_gate(
        model(stage="staging", at="production"), gate("deny", stage="staging"), T0
    )
    assert staging_denied.stage == "none"
    # Below the refused stage nothing moves; archiving never demotes.
    assert model_rules.status_after_gate(model(), gate("require_approval"), T0).stage == "staging"
    archived = model(stage="archived", at="production")
    assert model_rules.status_after_gate(archived, gate("deny", stage="archived"), T0).stage == (
        "production"
    )


def test_the_decision_names_the_digest_it_was_made_for() -> None:
    status = model_rules.status_after_gate(model(sha="c" * 64), gate("allow"), T0)
    assert status.policy is not None and status.policy.sha256 == "c" * 64


def test_approvals_count_only_for_the_digest_they_name() -> None:
    m = model(owner="alice")
    record = {"user": "bob", "stage": "production", "at": "2026-01-01T00:00:00Z"}
    counted, ignored = approval_rules.counted_approvals(m, [{**record, "sha256": "a" * 64}])
    assert [a.user for a in counted] == ["bob"] and not ignored
    for other in ({**record, "sha256": "b" * 64}, record):  # another artifact, or none named
        counted, ignored = approval_rules.counted_approvals(m, [other])
        assert not counted and "approval was for artifact" in ignored[0]
    unregistered = model()
    unregistered.status = None
    _, problem = approval_rules.approval_record(unregistered, "bob", "production", T0)
    assert problem is not None and "nothing to approve" in problem


def deployment(**strategy: object) -> Deployment:
    return Deployment.model_validate({
        "metadata": {"name": "churn"},
        "spec": {"model": "churn-model", "strategy": strategy or {"type": "single"}},
    })  # fmt: skip


def test_plan_splits_traffic_by_the_canary_weight() -> None:
    models = {"churn-model": decided(model()), "churn-v2": decided(model(sha="b" * 64))}
    plan = deployment_rules.plan_predictors(
        deployment(type="canary", canary={"model": "churn-v2", "weight": 20}), models
    )
    assert [(p.role, p.model.name, p.weight) for p in plan] == [
        ("stable", "churn-model", 80),
        ("canary", "churn-v2", 20),
    ]
    assert plan.traffic() == {"stable": 80, "canary": 20}
    assert plan.digests() == {"stable": "a" * 64, "canary": "b" * 64}
    shadow = deployment_rules.plan_predictors(
        deployment(type="shadow", shadow={"model": "churn-v2"}), models
    )
    assert [(p.role, p.shadow, p.weight) for p in shadow] == [
        ("stable", False, 100),
        ("shadow", True, 0),
    ]
    assert shadow.traffic() == {"stable": 100} and shadow.stable.model.name == "churn-model"


def test_rollback_is_an_input_to_the_plan() -> None:
    """A rolled-back canary plans all live traffic on stable; the canary keeps running at 0 %
    and a shadow keeps its copy. The rolled-back split without Models is the same rule."""
    models = {"churn-model": decided(model()), "churn-v2": decided(model(sha="b" * 64))}
    dep = deployment(type="canary", canary={"model": "churn-v2", "weight": 20})
    plan = deployment_rules.plan_predictors(dep, models, rolled_back=True)
    assert plan.rolled_back and plan.traffic() == {"stable": 100, "canary": 0}
    assert [p.model.name for p in plan] == ["churn-model", "churn-v2"]
    assert plan.traffic() == traffic(dep, rolled_back=True)
    assert traffic(dep) == {"stable": 80, "canary": 20}
    shadowed = deployment(type="shadow", shadow={"model": "churn-v2"})
    assert deployment_rules.plan_predictors(shadowed, models, rolled_back=True).traffic() == {
        "stable": 100
    }


def test_the_compiler_serves_the_plan_as_made() -> None:
    models = {"churn-model": decided(model()), "churn-v2": decided(model(sha="b" * 64))}
    dep = deployment(type="canary", canary={"model": "churn-v2", "weight": 20})
    for rolled_back, weights in ((False, [80, 20]), (True, [100, 0])):
        plan = deployment_rules.plan_predictors(dep, models, rolled_back=rolled_back)
        seldon = compile_deployment(dep, plan)[0]
        assert [(p["name"], p["traffic"]) for p in seldon["spec"]["predictors"]] == list(
            zip(["stable", "canary"], weights, strict=True)
        )


def test_plan_waits_for_a_registered_model_in_the_required_stage() -> None:
    with pytest.raises(deployment_rules.NotServable, match="model churn-model not found"):
        deployment_rules.plan_predictors(deployment(), {})
    dep = deployment()
    assert dep.spec.require_stage == "production"  # the default
    staging = decided(model(), stage="staging")
    with pytest.raises(deployment_rules.NotServable, match="allow for stage staging"):
        deployment_rules.plan_predictors(dep, {"churn-model": staging})
    dep.spec.require_stage = "staging"
    assert deployment_rules.plan_predictors(dep, {"churn-model": staging})


def test_only_the_platforms_recorded_decision_makes_a_model_servable() -> None:
    """A status that claims production without an allow for that digest serves nothing."""
    claimed = model(at="production")  # stage written, no decision recorded
    assert "no recorded policy decision" in (
        deployment_rules.servable_problem(claimed, "production") or ""
    )
    swapped = decided(model())
    assert swapped.status is not None
    swapped.status.sha256 = "f" * 64  # the artifact changed after the decision
    assert "another artifact digest" in (
        deployment_rules.servable_problem(swapped, "production") or ""
    )
    waiting = decided(model(), "require_approval")
    assert "require_approval" in (deployment_rules.servable_problem(waiting, "production") or "")
    assert deployment_rules.servable_problem(decided(model()), "production") is None


def test_deployment_status_records_endpoint_and_split() -> None:
    dep = deployment()
    plan = deployment_rules.plan_predictors(dep, {"churn-model": decided(model())})
    status = deployment_rules.deployment_status(dep, plan, "http://127.0.0.1:9000", T0)
    assert status.phase == "Serving" and status.endpoint == "http://127.0.0.1:9000"
    assert status.traffic == {"stable": 100}
    waiting = deployment_rules.deployment_status(dep, None, None, T0, "model churn-model not found")
    assert waiting.phase == "Pending" and waiting.condition("Ready").reason == "WaitingForModel"  # type: ignore[union-attr]


def test_a_model_registered_by_hand_is_gated_on_its_source_artifact() -> None:
    by_hand = Model.model_validate({
        "metadata": {"name": "imported"},
        "spec": {"source": {"artifactUri": "s3://models/imported", "sha256": "c" * 64},
                 "task": "regression"},
    })  # fmt: skip
    filled = model_rules.with_source_artifact(by_hand)
    assert filled.status is not None
    assert (filled.status.artifact_uri, filled.status.sha256) == ("s3://models/imported", "c" * 64)
    trained = model()
    assert model_rules.with_source_artifact(trained) is trained


def test_gate_event_reports_denials_as_warnings_with_the_rules() -> None:
    status = model_rules.status_after_gate(model(), gate("deny", ["sha256_missing"]), T0)
    assert status.policy is not None
    assert model_rules.gate_event(status.policy) == (
        "Warning", "PolicyDenied", "stage production: deny (sha256_missing)",
    )  # fmt: skip


def record(exp: Experiment, store: str = "s3://store", **status: object) -> dict:
    """A register step's record for `exp`'s run, with a forged stage, approvals and owner."""
    root = experiment_rules.registration_uri(store, exp, "churn-g1").removesuffix(
        "/registration.json"
    )
    manifest = model(owner="mallory").wire()
    manifest["metadata"] = {
        "name": "prod-model",
        "labels": {"team": "x"},
        "annotations": {"aiml024.io/approvals": '[{"user":"bob","stage":"production"}]'},
    }
    manifest["status"] |= {
        "artifactUri": f"{root}/bundle",
        "evidence": {"modelCardUri": f"{root}/card/model_card.md"},
        "stage": "production",
        "approvals": [{"user": "bob", "stage": "production", "at": "2026-01-01T00:00:00Z"}],
        **status,
    }
    return {"model": manifest, "artifactUri": f"{root}/bundle", "modelCardUri": "x"}


def test_the_registered_model_takes_only_evidence_from_the_record() -> None:
    exp = experiment(generation=2)
    exp.metadata.namespace, exp.metadata.uid = "ml", "uid-1"
    exp.metadata.annotations["aiml024.io/applied-by"] = "alice"
    registered = experiment_rules.model_to_register(exp, record(exp), "s3://store", "churn-g1")
    assert registered.metadata.name == "churn-model-v2"  # per generation; not the record's name
    assert registered.metadata.annotations == {}
    assert registered.spec.owner == "alice" and registered.spec.stage == "staging"
    assert registered.status is not None
    assert registered.status.stage == "none" and registered.status.approvals == []
    assert registered.status.sha256 == "a" * 64
    assert registered.status.artifact_uri == "s3://store/ml/churn/uid-1/churn-g1/bundle"


def test_a_record_naming_artifacts_outside_its_run_is_refused() -> None:
    exp = experiment()
    exp.metadata.namespace, exp.metadata.uid = "ml", "uid-1"
    for forged in (
        "s3://store/other-ns/churn/uid-9/churn-g1/bundle",
        "s3://evil/bundle",
        "s3://store/ml/churn/uid-1/churn-g1/../../uid-0/churn-g1/bundle",
    ):
        with pytest.raises(SpecError, match="is not under this run's artifacts"):
            experiment_rules.model_to_register(
                exp, record(exp, artifactUri=forged), "s3://store", "churn-g1"
            )


def test_a_registered_version_is_never_replaced() -> None:
    exp = experiment()
    exp.metadata.namespace, exp.metadata.uid = "ml", "uid-1"
    first = experiment_rules.model_to_register(exp, record(exp), "s3://store", "churn-g1")
    assert experiment_rules.registration_conflict(first, first) is None
    exp.metadata.uid = "uid-2"  # deleted and re-created: same names, another run
    again = experiment_rules.model_to_register(exp, record(exp), "s3://store", "churn-g1")
    assert "never replaced" in (experiment_rules.registration_conflict(first, again) or "")


def test_a_model_made_ahead_of_the_run_is_never_adopted() -> None:
    """The source of the next version is predictable; a Model an editor made with it must not
    receive the run's evidence under the editor's ownership (four eyes)."""
    exp = experiment()
    exp.metadata.namespace, exp.metadata.uid = "ml", "uid-1"
    exp.metadata.annotations["aiml024.io/applied-by"] = "alice"
    wanted = experiment_rules.model_to_register(exp, record(exp), "s3://store", "churn-g1")
    squatted = wanted.model_copy(deep=True)
    squatted.spec.owner, squatted.status = "mallory", None
    conflict = experiment_rules.registration_conflict(squatted, wanted) or ""
    assert "made by mallory" in conflict and "never adopted" in conflict
