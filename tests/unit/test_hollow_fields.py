"""No hollow fields: every field of the three kinds is implemented (a named test exercises it)
or refused with `not supported yet: <path>` by `aiml024 apply`, the webhook and the compiler.

A field added to `aiml024.api` later fails `test_every_spec_field_is_implemented_or_refused`
until it is classified here: name the test that exercises it in EXERCISED, or refuse it in
`aiml024.api.support.UNSUPPORTED`. Status fields are the platform's to write: each names the
module that writes it (STATUS_WRITTEN) or says why nothing does yet (STATUS_UNWRITTEN).
"""

from __future__ import annotations

import ast
import re
import time
import types
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from tests.conftest import EXAMPLES, REPO
from typer.testing import CliRunner

from aiml024.api import (
    KINDS,
    UNSUPPORTED,
    Deployment,
    Experiment,
    ExperimentSpec,
    Model,
    SpecError,
    parse_object,
    unsupported,
)
from aiml024.compiler import (
    CompileError,
    ServedModel,
    compile_deployment,
    compile_experiment,
    compile_objects,
)
from aiml024.local.manifests import load_manifests

# --- the classification -----------------------------------------------------------------------

_STEPS = "tests/unit/test_rollout.py::test_canary_walks_its_steps_with_the_slo_met_and_is_promoted"
_AB = "tests/unit/test_rollout.py::test_ab_keeps_the_split_and_follows_the_test"
_BLUEGREEN = "tests/unit/test_rollout.py::test_bluegreen_previews_then_switches_then_promotes"
_RETRAIN_STEPS = (
    "tests/unit/test_rollout.py::test_a_retrain_rolls_out_as_a_canary_through_the_monitors_steps"
)
# Spec path -> the test that exercises it ("file::test" or "file::Class::test").
_CRON = (
    "tests/unit/test_compiler_seldon.py::TestDriftMonitors::"
    "test_each_monitor_is_a_cron_workflow_on_its_schedule"
)
EXERCISED: dict[str, dict[str, str]] = {
    "Experiment": {
        "spec.task": "tests/unit/test_search.py::test_regression_minimizes_rmse",
        "spec.data.uri": (
            "tests/unit/test_ingest.py::TestIngestStep::test_writes_the_dataset_and_describes_it"
        ),
        "spec.data.format": "tests/unit/test_hollow_fields.py::test_data_format_overrides_the_suffix",
        "spec.target": "tests/unit/test_validate.py::TestTarget::test_missing_target_lists_the_columns",
        "spec.idColumn": (
            "tests/unit/test_ingest.py::TestInferTypes::test_spec_names_id_and_text_columns"
        ),
        "spec.timeColumn": (
            "tests/unit/test_hollow_fields.py::test_split_settings_shape_the_holdout_and_folds"
        ),
        "spec.objective": (
            "tests/unit/test_hollow_fields.py::test_sampler_and_objective_make_the_study"
        ),
        "spec.split.strategy": (
            "tests/unit/test_hollow_fields.py::test_split_settings_shape_the_holdout_and_folds"
        ),
        "spec.split.folds": (
            "tests/unit/test_hollow_fields.py::test_split_settings_shape_the_holdout_and_folds"
        ),
        "spec.split.holdoutFraction": (
            "tests/unit/test_hollow_fields.py::test_split_settings_shape_the_holdout_and_folds"
        ),
        "spec.search.sampler": (
            "tests/unit/test_hollow_fields.py::test_sampler_and_objective_make_the_study"
        ),
        "spec.search.trials": (
            "tests/unit/test_search.py::test_search_runs_the_requested_trials_and_reports_each"
        ),
        "spec.search.timeBudgetSeconds": "tests/unit/test_search.py::test_search_keeps_its_time_budget",
        "spec.search.parallelism": (
            "tests/unit/test_compiler_workflow.py::TestDistributedSearch::"
            "test_parallelism_fans_out_workers_then_merges_into_the_search_task"
        ),
        "spec.search.learners": (
            "tests/unit/test_hollow_fields.py::test_learners_and_patience_reach_every_fit"
        ),
        "spec.search.warmStart": (
            "tests/unit/test_search.py::test_search_runs_the_requested_trials_and_reports_each"
        ),
        "spec.search.earlyStopping.enabled": (
            "tests/unit/test_search_objectives.py::test_each_early_stopping_pruner_is_wired"
        ),
        "spec.search.earlyStopping.pruner": (
            "tests/unit/test_search_objectives.py::test_each_early_stopping_pruner_is_wired"
        ),
        "spec.search.earlyStopping.patienceRounds": (
            "tests/unit/test_hollow_fields.py::test_learners_and_patience_reach_every_fit"
        ),
        "spec.search.ensemble.enabled": (
            "tests/unit/test_hollow_fields.py::test_ensemble_settings_choose_the_blend"
        ),
        "spec.search.ensemble.size": (
            "tests/unit/test_hollow_fields.py::test_ensemble_settings_choose_the_blend"
        ),
        "spec.search.seed": "tests/unit/test_search.py::test_same_seed_gives_the_same_leaderboard",
        "spec.features.textColumns": (
            "tests/unit/test_ingest.py::TestInferTypes::test_spec_names_id_and_text_columns"
        ),
        "spec.features.text.method": "tests/unit/test_features.py::test_text_becomes_dense_reduced_columns",
        "spec.features.text.maxFeatures": (
            "tests/unit/test_hollow_fields.py::test_feature_settings_reach_the_featurizer"
        ),
        "spec.features.datetimeParts": (
            "tests/unit/test_hollow_fields.py::test_feature_settings_reach_the_featurizer"
        ),
        "spec.features.dropColumns": "tests/unit/test_features.py::test_drop_columns_are_ignored",
        "spec.pii.scan": "tests/unit/test_validate.py::TestPii::test_scan_off_leaves_data_alone_and_says_it_was_not_scanned",
        "spec.pii.action": "tests/unit/test_validate.py::TestPii::test_drop_removes_the_columns",
        "spec.fairness.sensitiveAttributes": (
            "tests/unit/test_evidence.py::test_fairness_is_measured_over_the_sensitive_attribute_it_does_not_train_on"
        ),
        "spec.fairness.allowAsFeatures": "tests/unit/test_evidence.py::test_sensitive_attributes_are_features_only_when_allowed",
        "spec.explain.immutableFeatures": (
            "tests/unit/test_evidence.py::test_a_counterfactual_flips_the_decision_without_touching_immutables"
        ),
        "spec.explain.topFeatures": (
            "tests/unit/test_evidence.py::test_explanations_cover_shap_importance_pdp_ice_and_counterfactuals"
        ),
        "spec.costMatrix.falsePositive": "tests/unit/test_evidence.py::test_the_cost_matrix_moves_the_threshold",
        "spec.costMatrix.falseNegative": "tests/unit/test_evidence.py::test_the_cost_matrix_moves_the_threshold",
        "spec.expectations[].column": "tests/unit/test_validate.py::TestExpectations::test_a_missing_column_is_a_violation",
        "spec.expectations[].dtype": "tests/unit/test_validate.py::TestExpectations::test_a_violation_fails_the_run_naming_column_check_and_values",
        "spec.expectations[].min": "tests/unit/test_validate.py::TestExpectations::test_a_violation_fails_the_run_naming_column_check_and_values",
        "spec.expectations[].max": "tests/unit/test_validate.py::TestExpectations::test_several_violations_and_other_problems_fail_together",
        "spec.expectations[].nullable": "tests/unit/test_validate.py::TestExpectations::test_several_violations_and_other_problems_fail_together",
        "spec.expectations[].unique": "tests/unit/test_validate.py::TestExpectations::test_several_violations_and_other_problems_fail_together",
        "spec.expectations[].allowedValues": (
            "tests/unit/test_validate.py::TestExpectations::test_several_violations_and_other_problems_fail_together"
        ),
        "spec.constraints.latencyP95Ms": (
            "tests/unit/test_search_objectives.py::"
            "test_serving_constraints_choose_the_best_model_that_meets_them"
        ),
        "spec.constraints.maxModelSizeMb": (
            "tests/unit/test_search_objectives.py::"
            "test_serving_constraints_choose_the_best_model_that_meets_them"
        ),
        "spec.resources.cpu": (
            "tests/unit/test_compiler_workflow.py::TestContainers::test_resources_come_from_the_spec"
        ),
        "spec.resources.memory": (
            "tests/unit/test_compiler_workflow.py::TestContainers::test_resources_come_from_the_spec"
        ),
        "spec.resources.nodeSelector": (
            "tests/unit/test_hollow_fields.py::test_scheduling_fields_reach_the_search_pods"
        ),
        **{
            f"spec.resources.tolerations[].{name}": (
                "tests/unit/test_hollow_fields.py::test_scheduling_fields_reach_the_search_pods"
            )
            for name in ("key", "operator", "value", "effect", "tolerationSeconds")
        },
        "spec.model.name": "tests/unit/test_register.py::test_register_describes_the_model_version",
        "spec.model.labels": "tests/unit/test_register.py::test_register_describes_the_model_version",
    },
    "Model": {
        "spec.source.experiment": (
            "tests/unit/test_register.py::test_register_describes_the_model_version"
        ),
        "spec.source.trial": "tests/unit/test_register.py::test_register_describes_the_model_version",
        "spec.source.workflow": (
            "tests/unit/test_hollow_fields.py::test_a_registered_model_records_its_run"
        ),
        "spec.source.artifactUri": (
            "tests/unit/test_reconcile.py::"
            "test_a_model_registered_by_hand_is_gated_on_its_source_artifact"
        ),
        "spec.source.sha256": (
            "tests/unit/test_reconcile.py::"
            "test_a_model_registered_by_hand_is_gated_on_its_source_artifact"
        ),
        "spec.task": "tests/unit/test_register.py::test_register_describes_the_model_version",
        "spec.stage": "tests/unit/test_reconcile.py::test_allow_moves_the_stage_and_deny_does_not",
        "spec.owner": "tests/unit/test_policy_gate.py::test_owner_approval_does_not_count",
        "spec.description": (
            "tests/unit/test_hollow_fields.py::test_a_registered_model_records_its_run"
        ),
    },
    "Deployment": {
        "spec.model": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_single_model_gets_all_traffic"
        ),
        "spec.strategy.type": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_canary_splits_traffic_by_weight"
        ),
        "spec.strategy.canary.model": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_canary_splits_traffic_by_weight"
        ),
        "spec.strategy.canary.weight": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_canary_splits_traffic_by_weight"
        ),
        "spec.strategy.shadow.model": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_shadow_mirrors_without_live_traffic"
        ),
        # Rollouts (aiml024.reconcile.rollout).
        "spec.strategy.canary.steps": _STEPS,
        "spec.strategy.canary.steps[].weight": _STEPS,
        "spec.strategy.canary.steps[].pauseSeconds": _STEPS,
        "spec.strategy.ab.model": _AB,
        "spec.strategy.ab.weight": _AB,
        "spec.strategy.ab.promote": _AB,
        "spec.strategy.ab.alpha": (
            "tests/unit/test_rollout.py::"
            "test_peeking_after_every_20_outcomes_keeps_false_positives_within_alpha"
        ),
        "spec.strategy.ab.minSamples": "tests/unit/test_rollout.py::test_no_difference_at_max_samples",
        "spec.strategy.ab.maxSamples": "tests/unit/test_rollout.py::test_no_difference_at_max_samples",
        "spec.strategy.blueGreen.model": _BLUEGREEN,
        "spec.strategy.blueGreen.previewSeconds": _BLUEGREEN,
        "spec.monitors[].retrain.steps": _RETRAIN_STEPS,
        "spec.monitors[].retrain.steps[].weight": _RETRAIN_STEPS,
        "spec.monitors[].retrain.steps[].pauseSeconds": _RETRAIN_STEPS,
        "spec.replicas": (
            "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::"
            "test_fixed_replicas_without_autoscaling"
        ),
        **{
            f"spec.autoscaling.{name}": (
                "tests/unit/test_compiler_seldon.py::TestSeldonDeployment::test_hpa_from_autoscaling"
            )
            for name in ("minReplicas", "maxReplicas", "targetCpuUtilization")
        },
        "spec.slo.latencyP95Ms": (
            "tests/unit/test_compiler_seldon.py::TestMonitoring::test_slo_alerts_use_the_spec_thresholds"
        ),
        "spec.slo.errorRate": (
            "tests/unit/test_compiler_seldon.py::TestMonitoring::test_slo_alerts_use_the_spec_thresholds"
        ),
        "spec.slo.rollback": (
            "tests/integration/test_operator_decisions.py::"
            "test_no_rollback_without_canary_traffic_or_when_disabled"
        ),
        "spec.requireStage": "tests/unit/test_policy_deployment.py::test_any_stage_only_in_development",
        # Drift monitors (the rollout of a retrained Model, retrain.steps, is the rollout's).
        "spec.monitors[].name": _CRON,
        "spec.monitors[].type": _CRON,
        "spec.monitors[].schedule": _CRON,
        "spec.monitors[].method": (
            "tests/unit/test_drift.py::test_a_shifted_distribution_drifts_under_every_method"
        ),
        "spec.monitors[].threshold": (
            "tests/unit/test_drift.py::test_a_shifted_distribution_drifts_under_every_method"
        ),
        "spec.monitors[].minRows": "tests/unit/test_drift.py::test_too_few_rows_give_no_verdict",
        "spec.monitors[].features": "tests/unit/test_drift.py::test_watched_features_only",
        "spec.monitors[].webhook": (
            "tests/unit/test_drift.py::test_the_entry_point_writes_the_report_and_alerts"
        ),
        "spec.monitors[].action": (
            "tests/unit/test_retrain.py::test_no_retrain_without_drift_or_verdict_or_action"
        ),
        "spec.monitors[].retrain.experiment": (
            "tests/unit/test_retrain.py::test_a_drifted_report_patches_the_data_uri"
        ),
        "spec.monitors[].retrain.dataUri": (
            "tests/unit/test_retrain.py::test_a_drifted_report_patches_the_data_uri"
        ),
    },
}

# The enum values each implemented field accepts and the platform does: a new value must be
# added here (implemented) or refused in UNSUPPORTED as `path=value`.
IMPLEMENTED_VALUES: dict[str, dict[str, set[str]]] = {
    "Experiment": {
        "spec.expectations[].dtype": {"numeric", "string", "boolean", "datetime"},
        "spec.task": {"classification", "regression"},
        "spec.data.format": {"auto", "csv", "parquet"},
        "spec.objective": {
            "maximize_auc",
            "maximize_f1",
            "maximize_accuracy",
            "minimize_logloss",
            "minimize_rmse",
            "minimize_mae",
            "maximize_r2",
        },
        "spec.split.strategy": {"stratified-kfold", "kfold", "time-series"},
        "spec.search.sampler": {"tpe", "random", "cmaes", "nsga2"},
        "spec.search.learners": {
            "lightgbm",
            "xgboost",
            "random_forest",
            "extra_trees",
            "linear",
            "knn",
        },
        "spec.search.earlyStopping.pruner": {"median", "successive-halving", "hyperband", "none"},
        "spec.features.text.method": {"tfidf"},
        "spec.features.datetimeParts": {"year", "month", "day", "dayofweek", "hour", "dayofyear"},
        "spec.pii.action": {"mask", "drop", "fail"},
        "spec.resources.tolerations[].operator": {"Exists", "Equal"},
        "spec.resources.tolerations[].effect": {"NoSchedule", "PreferNoSchedule", "NoExecute"},
    },
    "Model": {
        "spec.task": {"classification", "regression"},
        "spec.stage": {"none", "staging", "production", "archived"},
    },
    "Deployment": {
        # canary, ab and bluegreen roll out (aiml024.reconcile.rollout).
        "spec.strategy.type": {"single", "canary", "shadow", "ab", "bluegreen"},
        "spec.requireStage": {"staging", "production", "any"},
        "spec.monitors[].type": {"drift"},
        "spec.monitors[].method": {"psi", "ks", "chi2"},
        "spec.monitors[].action": {"alert", "retrain"},
    },
}

# Status path (a key covers the fields below it) -> the module that writes it.
_RECONCILE_EXPERIMENT = "src/aiml024/reconcile/experiment.py"
_RECONCILE_MODEL = "src/aiml024/reconcile/model.py"
_RECONCILE_DEPLOYMENT = "src/aiml024/reconcile/deployment.py"
_REGISTER = "src/aiml024/runtime/steps/register.py"
STATUS_WRITTEN: dict[str, dict[str, str]] = {
    "Experiment": {
        name: _RECONCILE_EXPERIMENT
        for name in (
            "status.observedGeneration",
            "status.phase",
            "status.conditions",
            "status.workflowName",
            "status.trialsTotal",
            "status.trialsCompleted",
            "status.metric",
            "status.bestValue",
            "status.bestTrial",
            "status.leaderboard",
            "status.modelName",
            "status.startedAt",
            "status.finishedAt",
            "status.message",
        )
    },
    "Model": {
        "status.observedGeneration": _RECONCILE_MODEL,
        "status.phase": _RECONCILE_MODEL,
        "status.conditions": _RECONCILE_MODEL,
        "status.policy": _RECONCILE_MODEL,
        "status.stage": _RECONCILE_MODEL,
        "status.approvals": "src/aiml024/operator/model.py",
        "status.artifactUri": _REGISTER,
        "status.sha256": _REGISTER,
        "status.metrics": _REGISTER,
        "status.baselineMetrics": _REGISTER,
        "status.primaryMetric": _REGISTER,
        "status.leaderboard": _REGISTER,
        "status.lineage": _REGISTER,
        "status.evidence.modelCardUri": _REGISTER,
        "status.evidence.modelCardComplete": _REGISTER,
        "status.evidence.piiColumns": _REGISTER,
        "status.evidence.piiAction": _REGISTER,
        "status.evidence.calibration": _REGISTER,
        "status.evidence.fairness": _REGISTER,
        "status.evidence.sensitiveAttributes": _REGISTER,
        "status.evidence.explanationUri": _REGISTER,
        "status.evidence.reportUri": _REGISTER,
        "status.evidence.serving": _REGISTER,
        "status.cardSignature.keyFingerprint": _REGISTER,
        "status.cardSignature.signatureUri": _REGISTER,
    },
    "Deployment": {
        "status.observedGeneration": _RECONCILE_DEPLOYMENT,
        "status.phase": _RECONCILE_DEPLOYMENT,
        "status.conditions": _RECONCILE_DEPLOYMENT,
        "status.endpoint": _RECONCILE_DEPLOYMENT,
        "status.traffic": _RECONCILE_DEPLOYMENT,
        "status.models": _RECONCILE_DEPLOYMENT,
        "status.sloState": "src/aiml024/reconcile/slo.py",
        "status.lastRollback": "src/aiml024/reconcile/slo.py",
        "status.rollout": "src/aiml024/reconcile/rollout.py",
        "status.drift": "src/aiml024/operator/monitors.py",
        "status.monitors": "src/aiml024/operator/monitors.py",
    },
}
# Status fields nothing writes yet (the schema keeps them for the features that will).
STATUS_UNWRITTEN: dict[str, dict[str, str]] = {
    "Experiment": {},
    "Model": {},
    "Deployment": {},
}

HOW_TO_CLASSIFY = (
    "classify each: implement it and name the test that exercises it in EXERCISED "
    "(tests/unit/test_hollow_fields.py), or refuse it in aiml024.api.support.UNSUPPORTED "
    "(the CRD keeps it; apply, the webhook and the compiler refuse it)"
)


# --- walking the api models ---------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


def _literals(annotation: Any) -> set[str]:
    if typing.get_origin(annotation) is Literal:
        return {str(v) for v in typing.get_args(annotation)}
    values: set[str] = set()
    for arg in typing.get_args(annotation):
        values |= _literals(arg)
    return values


def walk(model: type[BaseModel], prefix: str) -> dict[str, FieldInfo]:
    """Every field below `model` by wire path; list items are `[]`."""
    paths: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        paths[path] = info
        inner = path + ("[]" if _is_list(info.annotation) else "")
        for nested in _models_in(info.annotation):
            paths |= walk(nested, inner)
    return paths


def leaves(paths: dict[str, FieldInfo]) -> list[str]:
    return [p for p, info in paths.items() if not _models_in(info.annotation)]


def spec_fields(kind: str) -> dict[str, FieldInfo]:
    return walk(KINDS[kind].model_fields["spec"].annotation, "spec")  # type: ignore[arg-type]


def status_fields(kind: str) -> dict[str, FieldInfo]:
    (status,) = _models_in(KINDS[kind].model_fields["status"].annotation)
    return walk(status, "status")


def covered_by(path: str, keys: typing.Iterable[str]) -> str | None:
    """The key that is `path` or one of its ancestors (`a.b` covers `a.b.c` and `a.b[].c`)."""
    for key in keys:
        if path == key or path.startswith((key + ".", key + "[]")):
            return key
    return None


def refused_paths(kind: str) -> list[str]:
    return [key for key in UNSUPPORTED[kind] if "=" not in key]


# --- every field is classified ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_spec_field_is_implemented_or_refused(kind: str) -> None:
    unclassified = [
        path
        for path in leaves(spec_fields(kind))
        if path not in EXERCISED[kind] and covered_by(path, refused_paths(kind)) is None
    ]
    assert not unclassified, f"{kind} fields neither exercised nor refused: {unclassified}; " + (
        HOW_TO_CLASSIFY
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_field_is_both_exercised_and_refused(kind: str) -> None:
    both = [p for p in EXERCISED[kind] if covered_by(p, refused_paths(kind))]
    assert not both, f"{kind}: {both} are refused; drop them from EXERCISED or from UNSUPPORTED"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_enum_value_is_implemented_or_refused(kind: str) -> None:
    fields = spec_fields(kind)
    for path in leaves(fields):
        values = _literals(fields[path].annotation)
        if not values or covered_by(path, refused_paths(kind)):
            continue
        refused = {k.partition("=")[2] for k in UNSUPPORTED[kind] if k.startswith(path + "=")}
        implemented = IMPLEMENTED_VALUES[kind].get(path, set())
        missing = values - refused - implemented
        assert not missing, (
            f"{kind} {path}: values {sorted(missing)} are neither implemented nor refused; "
            f"add them to IMPLEMENTED_VALUES once the platform does them, or refuse each in "
            f"UNSUPPORTED as {path}=<value>"
        )
        assert not refused & implemented, f"{kind} {path}: {refused & implemented} both ways"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_status_field_is_written_or_listed_as_unwritten(kind: str) -> None:
    written, unwritten = STATUS_WRITTEN[kind], STATUS_UNWRITTEN[kind]
    unclassified = [
        path
        for path in leaves(status_fields(kind))
        if covered_by(path, written) is None and path not in unwritten
    ]
    assert not unclassified, (
        f"{kind} status fields with no writer: {unclassified}; name the module that writes "
        "each in STATUS_WRITTEN, or say why nothing does yet in STATUS_UNWRITTEN"
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_status_writers_exist_and_set_the_field(kind: str) -> None:
    for path, module in STATUS_WRITTEN[kind].items():
        source = REPO / module
        assert source.is_file(), f"{kind} {path}: {module} does not exist"
        attribute = re.sub(r"([A-Z])", r"_\1", path.rpartition(".")[2]).lower()
        assert re.search(rf"\b{attribute}\b", source.read_text()), (
            f"{kind} {path}: {module} never mentions {attribute}"
        )


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_stale_entries(kind: str) -> None:
    specs, statuses = spec_fields(kind), status_fields(kind)
    for key in UNSUPPORTED[kind]:
        path, _, value = key.partition("=")
        assert path in specs, f"UNSUPPORTED[{kind}] names no field: {key}"
        if value:
            assert value in _literals(specs[path].annotation), f"{key}: {value} is not a value"
    for path in [*EXERCISED[kind], *IMPLEMENTED_VALUES[kind]]:
        assert path in specs, f"{kind} {path} is not a spec field (renamed or removed?)"
    for path in [*STATUS_WRITTEN[kind], *STATUS_UNWRITTEN[kind]]:
        assert path in statuses, f"{kind} {path} is not a status field (renamed or removed?)"


def _named_tests() -> list[str]:
    return sorted({ref for kind in EXERCISED.values() for ref in kind.values()})


@pytest.mark.parametrize("ref", _named_tests())
def test_the_named_test_exists(ref: str) -> None:
    file, *scope, name = ref.split("::")
    path = REPO / file
    assert path.is_file(), f"{ref}: no file {file}"
    text = path.read_text()
    assert re.search(rf"^\s*(async )?def {name}\(", text, re.MULTILINE), f"{ref}: no def {name}"
    if scope:
        classes = {n.name: n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ClassDef)}
        assert scope[0] in classes, f"{ref}: no class {scope[0]}"
        methods = {n.name for n in ast.walk(classes[scope[0]]) if isinstance(n, ast.FunctionDef)}
        assert name in methods, f"{ref}: {name} is not in class {scope[0]}"


# --- refused fields are refused everywhere ------------------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "Experiment": {"task": "classification", "data": {"uri": "s3://b/churn.csv"}, "target": "y"},
    "Model": {"source": {"experiment": "churn"}, "task": "classification"},
    "Deployment": {"model": "churn-model-v1"},
}
SQL = {"sql": {"urlSecret": {"name": "db", "key": "url"}, "query": "select 1"}}
# One spec (merged over BASE) per refused key that sets it.
SAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "Experiment": {
        "spec.task=forecasting": {"task": "forecasting"},
        "spec.task=anomaly": {"task": "anomaly"},
        "spec.task=text-classification": {"task": "text-classification"},
        "spec.task=image-classification": {"task": "image-classification"},
        "spec.data.sql": {"data": SQL},
        "spec.split.strategy=holdout": {"split": {"strategy": "holdout"}},
        "spec.features.text.method=embeddings": {"features": {"text": {"method": "embeddings"}}},
        "spec.constraints.maxCostPerHour": {"constraints": {"maxCostPerHour": 2.5}},
        "spec.resources.gpu": {"resources": {"gpu": 1}},
    },
    "Model": {},
    "Deployment": {
        "spec.monitors[].type=performance": {"monitors": [{"type": "performance"}]},
    },
}
SERVED = {
    name: ServedModel(name, f"s3://bucket/models/{name}", "ab" * 32, "classification")
    for name in ("churn-model-v1", "churn-model-v2")
}


def document(kind: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "churn"},
        "spec": BASE[kind] | (spec or {}),
    }


def expected_message(key: str) -> str:
    path, _, value = key.partition("=")
    return "not supported yet: " + path.replace("[]", "[0]") + (f"={value}" if value else "")


def _compile(obj: Experiment | Model | Deployment) -> None:
    if isinstance(obj, Experiment):
        compile_experiment(obj)
    elif isinstance(obj, Deployment):
        compile_deployment(obj, SERVED)


REFUSALS = [(kind, key) for kind, keys in UNSUPPORTED.items() for key in keys]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_refused_field_has_a_sample(kind: str) -> None:
    assert set(SAMPLES[kind]) == set(UNSUPPORTED[kind])


@pytest.mark.parametrize(("kind", "key"), REFUSALS, ids=[k for _, k in REFUSALS])
def test_a_refused_field_is_refused_by_apply_and_the_compiler(kind: str, key: str) -> None:
    doc = document(kind, SAMPLES[kind][key])
    message = expected_message(key)
    with pytest.raises(SpecError) as refused:
        parse_object(doc, "spec.yaml")
    lines = str(refused.value).splitlines()
    assert any(line.startswith(f"spec.yaml: {message} (") for line in lines), lines
    # The webhook's check: the same messages from the same function.
    obj = KINDS[kind].model_validate(doc)
    assert [line.removeprefix("spec.yaml: ") for line in lines] == unsupported(obj)
    # The compiler never turns it into manifests, even from an object built in code.
    if kind != "Model":
        with pytest.raises(CompileError, match=re.escape(message + " (")):
            _compile(obj)


def test_each_refused_field_is_its_own_line() -> None:
    spec = {**SAMPLES["Experiment"]["spec.resources.gpu"]}
    spec |= SAMPLES["Experiment"]["spec.constraints.maxCostPerHour"]
    with pytest.raises(SpecError) as refused:
        parse_object(document("Experiment", spec), "exp.yaml")
    lines = str(refused.value).splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "exp.yaml: not supported yet: spec.constraints.maxCostPerHour",
        "exp.yaml: not supported yet: spec.resources.gpu",
    ]


def test_every_monitor_is_named_by_its_index() -> None:
    doc = document(
        "Deployment", {"monitors": [{"name": "a"}, {"name": "b", "type": "performance"}]}
    )
    problems = [p.split(" (")[0] for p in unsupported(Deployment.model_validate(doc))]
    assert problems == ["not supported yet: spec.monitors[1].type=performance"]


def test_defaults_and_other_values_are_not_refused() -> None:
    """A field left at (or set to) its default, and the values that work, are fine."""
    exp = document(
        "Experiment",
        {
            "task": "regression",
            "split": {"strategy": "kfold"},
            "features": {"text": {"method": "tfidf"}},
            "constraints": {"latencyP95Ms": 20},
            "resources": {"gpu": 0},
        },
    )
    dep = document(
        "Deployment",
        {"strategy": {"type": "canary", "canary": {"model": "m2", "steps": []}}, "monitors": []},
    )
    for doc in (exp, dep):
        obj = parse_object(doc)
        assert unsupported(obj) == []
        # The wire form spells out every default; it is accepted again as it is.
        assert parse_object(obj.wire()) == obj


def test_an_update_refuses_only_what_it_adds() -> None:
    """As the API server ratchets CRD rules: an object stored before a field was refused can
    still be patched (its metadata, a fix of another field) without removing it first."""
    before = Deployment.model_validate(
        document("Deployment", {"monitors": [{"type": "performance"}]})
    )
    same = before.model_copy(update={"metadata": before.metadata.model_copy()})
    same.metadata.labels = {"team": "x"}
    assert unsupported(same, before=before) == []
    worse = Deployment.model_validate(
        document(
            "Deployment",
            {"monitors": [{"type": "performance"}, {"name": "b", "type": "performance"}]},
        )
    )
    assert [p.split(" (")[0] for p in unsupported(worse, before=before)] == [
        "not supported yet: spec.monitors[1].type=performance"
    ]
    assert unsupported(before, before=None) != []


def test_the_cli_prints_one_error_line_per_refused_field(tmp_path: Path) -> None:
    from aiml024.cli.main import app

    manifest = tmp_path / "dep.yaml"
    manifest.write_text(
        yaml.safe_dump(
            document(
                "Deployment",
                {"monitors": [{"type": "performance"}, {"name": "b", "type": "performance"}]},
            )
        )
    )
    result = CliRunner().invoke(app, ["compile", "-f", str(manifest)])
    assert result.exit_code == 1
    output = result.output
    assert f"{manifest}: not supported yet: spec.monitors[0].type=performance (" in output
    assert f"{manifest}: not supported yet: spec.monitors[1].type=performance (" in output


@pytest.mark.parametrize(("kind", "key"), REFUSALS, ids=[k for _, k in REFUSALS])
def test_the_crd_keeps_a_refused_field_and_says_so(kind: str, key: str) -> None:
    plural = {"Experiment": "experiments", "Model": "models", "Deployment": "deployments"}[kind]
    for crds in (REPO / "crds", REPO / "manifests" / "crds"):
        crd = yaml.safe_load((crds / f"{plural}.aiml024.io.yaml").read_text())
        node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        path, _, value = key.partition("=")
        for part in path.split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = node["items"]
        assert "not supported yet" in node.get("description", "").lower(), (crds, key)
        if value:
            assert value in node["enum"] and value in node["description"], (crds, key)


# --- nothing the project uses is refused --------------------------------------------------------


def test_the_examples_still_parse_and_compile() -> None:
    objects = load_manifests(EXAMPLES / "churn")
    assert sorted(o.kind for o in objects) == ["Deployment", "Experiment"]
    assert all(unsupported(o) == [] for o in objects)
    kinds = sorted(m["kind"] for m in compile_objects(objects))
    assert kinds == [
        "CronWorkflow", "PrometheusRule", "SeldonDeployment", "ServiceMonitor", "Workflow"
    ]  # fmt: skip


def test_the_golden_manifests_come_from_supported_specs() -> None:
    for file in sorted((REPO / "tests" / "golden").rglob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("apiVersion") == "aiml024.io/v1alpha1":
                parse_object(doc, str(file))


# --- tests for implemented fields that had none -------------------------------------------------


def _frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "x": x,
            "when": pd.date_range("2025-01-01", periods=n, freq="h")[rng.permutation(n)],
            "note": rng.choice(["cancel my plan", "great service", "too expensive", "thanks"], n),
            "y": np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no"),
        }
    )


def _spec(**fields: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"task": "classification", "data": {"uri": "x.csv"}, "target": "y", "idColumn": "id"}
        | fields
    )


def test_data_format_overrides_the_suffix(tmp_path: Path) -> None:
    from tests.unit.test_ingest import params_for

    from aiml024.runtime.steps import StepError, ingest

    table = tmp_path / "export.parquet"  # CSV despite its name
    _frame(60).to_csv(table, index=False)
    with pytest.raises(StepError, match="as parquet"):
        ingest.run(params_for(str(table)), tmp_path / "in", tmp_path / "auto")
    forced = params_for(str(table), data={"uri": str(table), "format": "csv"})
    assert ingest.run(forced, tmp_path / "in", tmp_path / "csv")["rows"] == 60


def test_split_settings_shape_the_holdout_and_folds() -> None:
    from aiml024.runtime.splits import make_split
    from aiml024.runtime.training import training_data

    frame = _frame()
    random = _spec(split={"folds": 4, "holdoutFraction": 0.25})
    data = training_data(frame, random)
    split = make_split(data, random)
    assert len(split.holdout) == 60 and len(split.folds()) == 4
    chronological = _spec(
        timeColumn="when", split={"strategy": "time-series", "folds": 3, "holdoutFraction": 0.1}
    )
    split = make_split(training_data(frame, chronological), chronological)
    times = frame["when"].to_numpy()
    assert len(split.holdout) == 24 and len(split.folds()) == 3
    assert times[split.holdout].min() > times[split.train].max()  # the holdout is the latest
    kfold = _spec(split={"strategy": "kfold", "folds": 5})
    assert len(make_split(training_data(frame, kfold), kfold).folds()) == 5


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "nsga2"])
def test_sampler_and_objective_make_the_study(sampler: str) -> None:
    import optuna

    from aiml024.runtime.study import create_study

    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    for objective, direction in (("minimize_logloss", "MINIMIZE"), ("maximize_f1", "MAXIMIZE")):
        spec = _spec(objective=objective, search={"sampler": sampler})
        study = create_study(spec, None, f"s-{sampler}-{objective}", n_folds=3)
        assert isinstance(study.sampler, classes[sampler])
        assert study.direction.name == direction


def test_learners_and_patience_reach_every_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiml024.runtime import search
    from aiml024.runtime.search import Searcher
    from aiml024.runtime.splits import make_split
    from aiml024.runtime.study import create_study
    from aiml024.runtime.training import training_data

    seen: list[tuple[str, int]] = []

    def fake_train(learner: Any, *args: Any, patience: int, **kwargs: Any) -> Any:
        seen.append((learner.name, patience))
        raise RuntimeError("stop after the first fit")

    monkeypatch.setattr(search, "train", fake_train)
    spec = _spec(
        split={"folds": 2},
        search={"learners": ["xgboost"], "earlyStopping": {"patienceRounds": 7}, "trials": 2},
    )
    data = training_data(_frame(), spec)
    searcher = Searcher(data, make_split(data, spec), spec)
    searcher.run(create_study(spec, None, "patience", 2), 2, time.monotonic() + 60)
    assert seen == [("xgboost", 7), ("xgboost", 7)]


def test_ensemble_settings_choose_the_blend() -> None:
    import optuna

    from aiml024.runtime.search import Searcher, TrialRecord, top_k
    from aiml024.runtime.splits import make_split
    from aiml024.runtime.training import training_data

    def outcome(**ensemble: Any) -> Any:
        spec = _spec(search={"ensemble": ensemble})
        data = training_data(_frame(), spec)
        searcher = Searcher(data, make_split(data, spec), spec)
        rng = np.random.default_rng(0)
        records = []
        for number in range(4):
            p = np.clip(0.5 + 0.3 * (searcher.y - 0.5) + rng.normal(0, 0.4, len(searcher.y)), 0, 1)
            oof = np.column_stack([1 - p, p])
            records.append(TrialRecord(number, "lightgbm", {}, 0.7 - number / 100, oof, None))
        return spec, searcher.outcome(optuna.create_study(direction="maximize"), records)

    spec, blended = outcome(enabled=True, size=2)
    assert top_k(spec) == 2
    assert blended.ensemble is not None and set(blended.ensemble["trials"]) <= {0, 1}
    spec, wide = outcome(enabled=True, size=4)
    assert top_k(spec) == 4 and wide.ensemble is not None
    _, single = outcome(enabled=False)
    assert single.ensemble is None


def test_feature_settings_reach_the_featurizer() -> None:
    from aiml024.runtime.training import make_featurizer

    spec = _spec(
        features={
            "textColumns": ["note"],
            "text": {"maxFeatures": 3},
            "datetimeParts": ["hour"],
            "dropColumns": ["x"],
        }
    )
    frame = _frame()
    types = {"x": "numeric", "when": "datetime", "note": "categorical"}
    featurizer = make_featurizer(spec, types).fit(frame[["x", "when", "note"]])
    vectorizer = featurizer.text_["note"][0]
    assert len(vectorizer.vocabulary_) == 3
    names = featurizer.feature_names_
    assert not any(n.startswith("x") for n in names)
    assert [n for n in names if n.startswith("when")] == ["when__hour", "when__days_since"]


def test_scheduling_fields_reach_the_search_pods() -> None:
    toleration = {
        "key": "nvidia.com/gpu",
        "operator": "Equal",
        "value": "a100",
        "effect": "NoExecute",
        "tolerationSeconds": 60,
    }
    exp = parse_object(
        document(
            "Experiment",
            {"resources": {"nodeSelector": {"pool": "big"}, "tolerations": [toleration]}},
        )
    )
    assert isinstance(exp, Experiment)
    templates = {t["name"]: t for t in compile_experiment(exp)["spec"]["templates"]}
    assert templates["search"]["nodeSelector"] == {"pool": "big"}
    assert templates["search"]["tolerations"] == [toleration]
    assert "nodeSelector" not in templates["ingest"] and "tolerations" not in templates["ingest"]


def test_a_registered_model_records_its_run() -> None:
    from tests.unit.test_reconcile import experiment, record

    from aiml024.reconcile import experiment as experiment_rules

    exp = experiment(generation=2)
    exp.metadata.namespace, exp.metadata.uid = "ml", "uid-1"
    produced = record(exp)
    produced["model"]["spec"]["description"] = "churn, retrained on March data"
    registered = experiment_rules.model_to_register(exp, produced, "s3://store", "churn-g1")
    assert isinstance(registered, Model)
    assert registered.spec.source.workflow == "churn-g1"
    assert registered.spec.source.experiment == "churn"
    assert registered.spec.description == "churn, retrained on March data"
