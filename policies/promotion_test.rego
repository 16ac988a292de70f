# Unit tests for promotion.rego. Run with `opa test policies/` or through pytest
# (tests/unit/test_policy_gate.py runs every test_ rule with regorus).
package aiml024.promotion

import rego.v1

good_model := {
	"name": "churn-v3",
	"namespace": "risk",
	"task": "classification",
	"owner": "alice",
	"primaryMetric": "auc",
	"metrics": {"auc": 0.84, "f1": 0.71},
	"baselineMetrics": {"auc": 0.78, "f1": 0.60},
	"evidence": {
		"modelCardUri": "s3://aiml024-artifacts/churn/model_card.md",
		"modelCardComplete": true,
		"piiColumns": ["email"],
		"piiAction": "mask",
		"sensitiveAttributes": ["sex"],
		"fairness": {
			"sex.demographic_parity_difference": 0.04,
			"sex.equalized_odds_difference": 0.06,
		},
		"calibration": {"ece": 0.021, "brier": 0.12},
	},
	"lineage": {
		"datasetUri": "s3://data/churn.parquet",
		"datasetFingerprint": "fp-123",
		"specHash": "spec-456",
		"codeVersion": "0.1.0",
	},
	"sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"artifactUri": "s3://aiml024-artifacts/churn/bundle",
	"labels": {},
}

bob_approves := [{"user": "bob", "stage": "production", "at": "2024-05-01T10:00:00Z"}]

prod(m) := {"model": m, "stage": "production", "approvals": bob_approves, "config": {}}

prod_result(m) := r if r := result with input as prod(m)

patched(patch) := object.union(good_model, patch)

without(key) := object.remove(good_model, [key])

# object.union merges nested objects; replaced swaps a whole field.
replaced(key, value) := object.union(without(key), {key: value})

regression_model(metrics, baseline) := object.union(
	object.remove(good_model, ["metrics", "baselineMetrics"]),
	{"task": "regression", "primaryMetric": "rmse", "metrics": metrics, "baselineMetrics": baseline},
)

denied_with(r, msg) if {
	r.decision == "deny"
	msg in r.violations
}

denied_with_rule(r, rule) if {
	r.decision == "deny"
	some v in r.violations
	startswith(v, concat("", [rule, ":"]))
}

# --- decisions -------------------------------------------------------------------------

test_good_model_with_non_owner_approval_is_allowed if {
	prod_result(good_model) == {"decision": "allow", "violations": []}
}

test_good_model_without_approval_requires_approval if {
	r := result with input as {"model": good_model, "stage": "production", "approvals": []}
	r.decision == "require_approval"
	r.violations == ["approval_required: promotion to production needs an approval from someone other than the owner alice (approved so far by: nobody)"]
}

test_owner_approval_does_not_count if {
	approvals := [{"user": "Alice", "stage": "production", "at": "2024-05-01T10:00:00Z"}]
	r := result with input as {"model": good_model, "stage": "production", "approvals": approvals}
	r.decision == "require_approval"
	r.violations == ["approval_required: promotion to production needs an approval from someone other than the owner alice (approved so far by: Alice)"]
}

test_staging_approval_does_not_count_for_production if {
	approvals := [{"user": "bob", "stage": "staging", "at": "2024-05-01T10:00:00Z"}]
	r := result with input as {"model": good_model, "stage": "production", "approvals": approvals}
	r.decision == "require_approval"
}

test_approval_does_not_override_a_violation if {
	denied_with(prod_result(patched({"metrics": {"auc": 0.61}})), "metric_below_threshold: auc 0.61 < 0.70")
}

# --- metrics ---------------------------------------------------------------------------

test_classification_auc_below_threshold if {
	r := prod_result(patched({"metrics": {"auc": 0.61}, "baselineMetrics": {"auc": 0.55}}))
	r == {"decision": "deny", "violations": ["metric_below_threshold: auc 0.61 < 0.70"]}
}

test_auc_just_below_threshold_is_not_rounded_up if {
	r := prod_result(patched({"metrics": {"auc": 0.699}, "baselineMetrics": {"auc": 0.55}}))
	denied_with(r, "metric_below_threshold: auc 0.6990 < 0.70")
}

test_regression_r2_below_threshold if {
	m := regression_model({"rmse": 3.1, "r2": 0.21}, {"rmse": 4.0})
	prod_result(m) == {"decision": "deny", "violations": ["metric_below_threshold: r2 0.21 < 0.30"]}
}

test_required_metric_missing if {
	m := regression_model({"rmse": 3.1}, {"rmse": 4.0})
	denied_with(prod_result(m), "metric_missing: r2 is required for regression models (minimum 0.30) but the model reports rmse")
}

test_thresholds_are_data if {
	m := patched({"metrics": {"auc": 0.61}, "baselineMetrics": {"auc": 0.55}})
	tuned := object.union(data.aiml024.thresholds, {"minimum_metrics": {"classification": {"auc": 0.6}}})
	r := result with input as prod(m) with data.aiml024.thresholds as tuned
	r.decision == "allow"
}

test_missing_thresholds_deny if {
	r := result with input as prod(good_model) with data.aiml024.thresholds as null
	denied_with(r, "policy_error: data.aiml024.thresholds is not loaded (policies/data.json)")
}

# --- baseline --------------------------------------------------------------------------

test_not_better_than_baseline if {
	r := prod_result(patched({"metrics": {"auc": 0.74}, "baselineMetrics": {"auc": 0.76}}))
	r == {"decision": "deny", "violations": ["not_better_than_baseline: auc 0.74 does not beat the baseline's 0.76 (higher is better)"]}
}

test_equal_to_baseline_does_not_beat_it if {
	denied_with_rule(prod_result(patched({"baselineMetrics": {"auc": 0.84}})), "not_better_than_baseline")
}

test_lower_is_better_metric_beats_baseline_when_lower if {
	m := regression_model({"rmse": 3.1, "r2": 0.5}, {"rmse": 4.0})
	prod_result(m).decision == "allow"
}

test_lower_is_better_metric_higher_than_baseline_denies if {
	m := regression_model({"rmse": 4.5, "r2": 0.5}, {"rmse": 4.0})
	denied_with(prod_result(m), "not_better_than_baseline: rmse 4.50 does not beat the baseline's 4.00 (lower is better)")
}

test_baseline_missing if {
	m := replaced("baselineMetrics", {"f1": 0.5})
	denied_with(prod_result(m), "baseline_missing: no baseline auc to compare against (baseline reports f1)")
}

test_primary_metric_missing if {
	denied_with_rule(prod_result(without("primaryMetric")), "primary_metric_missing")
}

# --- evidence --------------------------------------------------------------------------

test_model_card_missing if {
	m := replaced("evidence", object.remove(good_model.evidence, ["modelCardUri"]))
	denied_with(prod_result(m), "model_card_missing: no model card (evidence.modelCardUri is not set)")
}

test_model_card_incomplete if {
	m := patched({"evidence": {"modelCardComplete": false}})
	denied_with(prod_result(m), "model_card_incomplete: the model card at s3://aiml024-artifacts/churn/model_card.md is incomplete; fill in its missing sections")
}

test_pii_found_without_masking if {
	m := patched({"evidence": {"piiColumns": ["ssn", "email"], "piiAction": "keep"}})
	denied_with(prod_result(m), `pii_unhandled: PII columns email, ssn were found and piiAction is "keep"; set piiAction to one of mask, drop`)
}

test_pii_found_without_action if {
	m := replaced("evidence", object.remove(good_model.evidence, ["piiAction"]))
	denied_with(prod_result(m), `pii_unhandled: PII columns email were found and piiAction is null; set piiAction to one of mask, drop`)
}

test_pii_dropped_is_allowed if {
	prod_result(patched({"evidence": {"piiAction": "drop"}})).decision == "allow"
}

test_no_pii_needs_no_action if {
	m := replaced("evidence", object.union(good_model.evidence, {"piiColumns": [], "piiAction": null}))
	prod_result(m).decision == "allow"
}

test_unscanned_data_cannot_reach_production if {
	m := replaced("evidence", object.union(good_model.evidence, {"piiColumns": [], "piiAction": "unscanned"}))
	denied_with(prod_result(m), "pii_unscanned: the data was not scanned for personal data (spec.pii.scan is false); scan it before production")
}

# --- fairness --------------------------------------------------------------------------

with_fairness(figures) := patched({"evidence": {"fairness": figures}})

# good_model with only these sensitive attributes and fairness figures
fairness_evidence(attributes, figures) := replaced_evidence({"sensitiveAttributes": attributes, "fairness": figures})

# good_model with these evidence fields replaced whole (object.union would merge them)
replaced_evidence(fields) := replaced(
	"evidence",
	object.union(object.remove(good_model.evidence, object.keys(fields)), fields),
)

test_demographic_parity_above_threshold if {
	r := prod_result(with_fairness({"sex.demographic_parity_difference": 0.23}))
	r == {"decision": "deny", "violations": ["fairness_demographic_parity: sex.demographic_parity_difference 0.23 > 0.10"]}
}

test_equalized_odds_above_threshold if {
	r := prod_result(with_fairness({"sex.equalized_odds_difference": 0.15}))
	r == {"decision": "deny", "violations": ["fairness_equalized_odds: sex.equalized_odds_difference 0.15 > 0.10"]}
}

test_fairness_at_the_threshold_is_allowed if {
	m := with_fairness({"sex.demographic_parity_difference": 0.1, "sex.equalized_odds_difference": 0.1})
	prod_result(m).decision == "allow"
}

test_fairness_just_above_the_threshold_is_not_rounded_down if {
	r := prod_result(with_fairness({"sex.demographic_parity_difference": 0.1004}))
	denied_with(r, "fairness_demographic_parity: sex.demographic_parity_difference 0.1004 > 0.10")
}

test_every_sensitive_attribute_is_judged if {
	m := fairness_evidence(["sex", "age_band"], {
		"sex.demographic_parity_difference": 0.04,
		"sex.equalized_odds_difference": 0.06,
		"age_band.demographic_parity_difference": 0.31,
		"age_band.equalized_odds_difference": 0.12,
	})
	prod_result(m).violations == [
		"fairness_demographic_parity: age_band.demographic_parity_difference 0.31 > 0.10",
		"fairness_equalized_odds: age_band.equalized_odds_difference 0.12 > 0.10",
	]
}

test_a_recorded_figure_is_judged_even_for_an_unnamed_attribute if {
	m := fairness_evidence([], {"region.demographic_parity_difference": 0.2})
	denied_with(prod_result(m), "fairness_demographic_parity: region.demographic_parity_difference 0.20 > 0.10")
}

test_fairness_missing_for_a_sensitive_attribute if {
	m := fairness_evidence(["sex"], {"sex.demographic_parity_difference": 0.04})
	r := prod_result(m)
	r == {"decision": "deny", "violations": ["fairness_missing: evidence.fairness has no sex.equalized_odds_difference; every sensitive attribute needs its demographic parity and equalized odds differences"]}
}

test_fairness_missing_names_each_attribute_and_figure if {
	m := fairness_evidence(["sex", "age_band"], {})
	prod_result(m).violations == [
		"fairness_missing: evidence.fairness has no age_band.demographic_parity_difference, age_band.equalized_odds_difference; every sensitive attribute needs its demographic parity and equalized odds differences",
		"fairness_missing: evidence.fairness has no sex.demographic_parity_difference, sex.equalized_odds_difference; every sensitive attribute needs its demographic parity and equalized odds differences",
	]
}

test_a_fairness_figure_that_is_not_a_number_is_missing if {
	m := with_fairness({"sex.equalized_odds_difference": null})
	denied_with_rule(prod_result(m), "fairness_missing")
}

test_regression_needs_no_parity_figures if {
	m := regression_model({"rmse": 3.1, "r2": 0.5}, {"rmse": 4.0})
	without_figures := object.union(
		object.remove(m, ["evidence"]),
		{"evidence": object.union(object.remove(good_model.evidence, ["fairness"]), {"fairness": {}})},
	)
	prod_result(without_figures) == {"decision": "allow", "violations": []}
	without_figures.evidence.sensitiveAttributes == ["sex"]
}

test_a_model_of_no_known_task_needs_its_fairness_figures if {
	m := object.remove(fairness_evidence(["sex"], {}), ["task"])
	denied_with_rule(prod_result(m), "fairness_missing")
}

test_no_sensitive_attributes_need_no_fairness_figures if {
	prod_result(fairness_evidence([], {})).decision == "allow"
}

test_other_fairness_figures_are_not_limits if {
	m := with_fairness({"sex.selection_rate": 0.95, "sex_demographic_parity_disparity": 0.5})
	prod_result(m).decision == "allow"
}

test_fairness_thresholds_are_data if {
	m := with_fairness({"sex.demographic_parity_difference": 0.23, "sex.equalized_odds_difference": 0.15})
	tuned := object.union(
		data.aiml024.thresholds,
		{"max_demographic_parity_difference": 0.25, "max_equalized_odds_difference": 0.2},
	)
	r := result with input as prod(m) with data.aiml024.thresholds as tuned
	r.decision == "allow"
}

test_the_product_fairness_and_calibration_thresholds if {
	data.aiml024.thresholds.max_demographic_parity_difference == 0.1
	data.aiml024.thresholds.max_equalized_odds_difference == 0.1
	data.aiml024.thresholds.max_ece == 0.05
	data.aiml024.thresholds.minimum_metrics.classification.auc == 0.7
}

test_a_missing_fairness_threshold_denies if {
	loose := object.remove(data.aiml024.thresholds, ["max_equalized_odds_difference"])
	m := with_fairness({"sex.equalized_odds_difference": 0.9})
	r := result with input as prod(m) with data.aiml024.thresholds as loose
	r == {"decision": "deny", "violations": ["policy_error: thresholds.max_equalized_odds_difference is not a number (policies/data.json)"]}
}

# --- calibration -----------------------------------------------------------------------

test_calibration_missing if {
	m := replaced_evidence({"calibration": {"brier": 0.12}})
	r := prod_result(m)
	r == {"decision": "deny", "violations": ["calibration_missing: a classification model needs evidence.calibration.ece (expected calibration error on the holdout); the model reports brier"]}
}

test_calibration_missing_without_any_figure if {
	m := replaced("evidence", object.remove(good_model.evidence, ["calibration"]))
	denied_with(prod_result(m), "calibration_missing: a classification model needs evidence.calibration.ece (expected calibration error on the holdout); the model reports none")
}

test_calibration_ece_above_threshold if {
	r := prod_result(patched({"evidence": {"calibration": {"ece": 0.08}}}))
	r == {"decision": "deny", "violations": ["calibration_ece: expected calibration error 0.08 > 0.05"]}
}

test_latency_above_threshold if {
	r := prod_result(patched({"evidence": {"serving": {"latencyP95Ms": 180.5, "sizeMb": 2}}}))
	r == {"decision": "deny", "violations": ["latency_p95: the served pipeline answers one row in 180.50 ms at p95 > 100 ms"]}
}

test_latency_within_threshold_is_allowed if {
	prod_result(patched({"evidence": {"serving": {"latencyP95Ms": 12.3, "sizeMb": 2}}})).decision == "allow"
}

test_calibration_ece_at_the_threshold_is_allowed if {
	prod_result(patched({"evidence": {"calibration": {"ece": 0.05}}})).decision == "allow"
}

test_regression_needs_no_calibration if {
	m := regression_model({"rmse": 3.1, "r2": 0.5}, {"rmse": 4.0})
	uncalibrated := object.union(
		object.remove(m, ["evidence"]),
		{"evidence": object.remove(good_model.evidence, ["calibration"])},
	)
	prod_result(uncalibrated) == {"decision": "allow", "violations": []}
}

test_a_missing_ece_threshold_denies if {
	loose := object.remove(data.aiml024.thresholds, ["max_ece"])
	r := result with input as prod(good_model) with data.aiml024.thresholds as loose
	denied_with(r, "policy_error: thresholds.max_ece is not a number (policies/data.json)")
}

test_staging_needs_no_fairness_or_calibration if {
	bare := replaced("evidence", {"sensitiveAttributes": ["sex"], "fairness": {}, "calibration": {}})
	r := result with input as {"model": bare, "stage": "staging", "approvals": []}
	r == {"decision": "allow", "violations": []}
}

# --- integrity: artifact, digest, lineage ---------------------------------------------

test_lineage_missing if {
	denied_with(prod_result(without("lineage")), "lineage_missing: lineage.datasetFingerprint, lineage.specHash, lineage.codeVersion not recorded; promotion needs the dataset fingerprint, spec hash and code version")
}

test_lineage_partly_missing if {
	m := replaced("lineage", object.remove(good_model.lineage, ["specHash"]))
	denied_with(prod_result(m), "lineage_missing: lineage.specHash not recorded; promotion needs the dataset fingerprint, spec hash and code version")
}

test_sha256_missing if {
	denied_with(prod_result(without("sha256")), "sha256_missing: the model has no sha256 digest, so its artifact cannot be verified")
}

test_sha256_invalid if {
	denied_with(prod_result(patched({"sha256": "abc"})), "sha256_invalid: abc is not a sha256 digest (64 lower-case hex characters)")
}

test_artifact_missing if {
	denied_with(prod_result(without("artifactUri")), "artifact_missing: the model has no artifactUri; register the model bundle first")
}

# --- staging, archived, unknown stages -------------------------------------------------

test_staging_ignores_quality_and_approvals if {
	weak := object.union(object.remove(good_model, ["metrics", "evidence"]), {"metrics": {"auc": 0.51}, "evidence": {}})
	r := result with input as {"model": weak, "stage": "staging", "approvals": []}
	r == {"decision": "allow", "violations": []}
}

test_staging_denies_missing_sha256 if {
	r := result with input as {"model": without("sha256"), "stage": "staging", "approvals": []}
	r == {"decision": "deny", "violations": ["sha256_missing: the model has no sha256 digest, so its artifact cannot be verified"]}
}

test_staging_denies_missing_lineage if {
	r := result with input as {"model": without("lineage"), "stage": "staging", "approvals": []}
	denied_with_rule(r, "lineage_missing")
}

test_staging_denies_missing_artifact if {
	r := result with input as {"model": without("artifactUri"), "stage": "staging", "approvals": []}
	denied_with_rule(r, "artifact_missing")
}

test_archived_is_always_allowed if {
	r := result with input as {"model": {}, "stage": "archived", "approvals": []}
	r == {"decision": "allow", "violations": []}
}

test_unknown_stage_is_denied if {
	r := result with input as {"model": good_model, "stage": "prod", "approvals": bob_approves}
	r == {"decision": "deny", "violations": ["unknown_stage: prod is not a stage; use staging, production or archived"]}
}

# --- approver groups and the approved artifact ------------------------------------------

risk_only := object.union(data.aiml024.thresholds, {"required_approver_groups": {"production": ["risk-officer"]}})

approval_by(user, groups) := {"user": user, "stage": "production", "at": "2024-05-01T10:00:00Z", "groups": groups}

grouped(approvals) := r if {
	r := result with input as {"model": good_model, "stage": "production", "approvals": approvals}
		with data.aiml024.thresholds as risk_only
}

test_any_approver_counts_when_no_group_is_required if {
	data.aiml024.thresholds.required_approver_groups.production == []
	r := result with input as {"model": good_model, "stage": "production", "approvals": [approval_by("bob", [])]}
	r == {"decision": "allow", "violations": []}
}

test_approver_in_required_group_counts if {
	grouped([approval_by("bob", ["ml-eng", "risk-officer"])]) == {"decision": "allow", "violations": []}
}

test_approver_outside_required_groups_does_not_count if {
	r := grouped([approval_by("bob", ["ml-eng"])])
	r.decision == "require_approval"
	r.violations == [
		"approval_ignored: bob is not in any of the groups risk-officer required to approve production (their groups: ml-eng)",
		"approval_required: promotion to production needs an approval from someone other than the owner alice who is in one of the groups risk-officer (approved so far by: bob)",
	]
}

test_approver_without_groups_does_not_count_when_a_group_is_required if {
	r := grouped([approval_by("bob", [])])
	r.decision == "require_approval"
	"approval_ignored: bob is not in any of the groups risk-officer required to approve production (their groups: none)" in r.violations
}

test_owner_in_required_group_still_does_not_count if {
	r := grouped([approval_by("alice", ["risk-officer"])])
	r.decision == "require_approval"
	r.violations == ["approval_required: promotion to production needs an approval from someone other than the owner alice who is in one of the groups risk-officer (approved so far by: alice)"]
}

test_malformed_group_setting_denies if {
	broken := object.union(data.aiml024.thresholds, {"required_approver_groups": {"production": "risk-officer"}})
	r := result with input as prod(good_model) with data.aiml024.thresholds as broken
	denied_with(r, `policy_error: thresholds.required_approver_groups.production must be a list of group names, not "risk-officer"`)
}

test_approval_of_this_artifact_counts if {
	approval := object.union(approval_by("bob", []), {"sha256": good_model.sha256})
	prod_result_with([approval]).decision == "allow"
}

test_approval_of_another_artifact_does_not_count if {
	other := "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
	r := prod_result_with([object.union(approval_by("bob", []), {"sha256": other})])
	r.decision == "require_approval"
	r.violations == [
		"approval_ignored: bob approved artifact ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff, not this model's 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; approve this version again",
		"approval_required: promotion to production needs an approval from someone other than the owner alice (approved so far by: bob)",
	]
}

test_approval_with_null_sha256_counts if {
	prod_result_with([object.union(approval_by("bob", []), {"sha256": null})]).decision == "allow"
}

prod_result_with(approvals) := r if {
	r := result with input as {"model": good_model, "stage": "production", "approvals": approvals}
}

# --- break-glass -----------------------------------------------------------------------

why := "incident 4711: fraud spike, retrained model needed before the card is done"

carol_breaks := {
	"user": "carol",
	"groups": ["risk-officer"],
	"stage": "production",
	"justification": why,
	"at": "2024-05-01T11:00:00Z",
	"sha256": good_model.sha256,
}

unfair := with_fairness({"sex.demographic_parity_difference": 0.27})

unfair_violation := "fairness_demographic_parity: sex.demographic_parity_difference 0.27 > 0.10"

broken(m, bg) := r if {
	r := result with input as {"model": m, "stage": "production", "approvals": bob_approves, "breakGlass": bg}
}

bg_with(patch) := object.union(carol_breaks, patch)

test_break_glass_overrides_a_quality_violation_and_says_so if {
	r := broken(unfair, carol_breaks)
	r.decision == "allow"
	r.violations == [sprintf("break_glass: carol overrode %v (%v)", [unfair_violation, json.marshal(why)])]
	r.breakGlass == {"user": "carol", "stage": "production", "overridden": [unfair_violation]}
}

test_without_break_glass_the_same_model_is_denied if {
	denied_with(prod_result(unfair), unfair_violation)
	not prod_result(unfair).breakGlass
}

test_break_glass_overrides_metrics_card_pii_and_calibration if {
	m := patched({
		"metrics": {"auc": 0.61},
		"evidence": {"modelCardComplete": false, "piiAction": "keep", "calibration": {"ece": 0.2}},
	})
	r := broken(m, carol_breaks)
	r.decision == "allow"
	rules := {split(v, ":")[0] | some v in r.breakGlass.overridden}
	rules == {"metric_below_threshold", "not_better_than_baseline", "model_card_incomplete", "pii_unhandled", "calibration_ece"}
	count(r.violations) == 5
	every v in r.violations {
		startswith(v, "break_glass: carol overrode ")
	}
}

test_break_glass_never_overrides_integrity if {
	m := object.union(object.remove(unfair, ["lineage"]), {"lineage": {"datasetUri": "s3://x"}})
	r := broken(m, carol_breaks)
	denied_with_rule(r, "lineage_missing")
	not denied_with_rule(r, "fairness_demographic_parity")
	r.breakGlass.overridden == [unfair_violation]
}

test_break_glass_never_overrides_a_missing_artifact if {
	r := broken(object.remove(unfair, ["artifactUri"]), carol_breaks)
	denied_with_rule(r, "artifact_missing")
}

test_break_glass_never_overrides_a_policy_error if {
	limits := object.remove(data.aiml024.thresholds, ["max_ece"])
	r := broken(unfair, carol_breaks) with data.aiml024.thresholds as limits
	denied_with(r, "policy_error: thresholds.max_ece is not a number (policies/data.json)")
	r.breakGlass.overridden == [unfair_violation]
}

test_break_glass_still_needs_an_approval_for_production if {
	r := result with input as {"model": unfair, "stage": "production", "approvals": [], "breakGlass": carol_breaks}
	r.decision == "require_approval"
	"approval_required: promotion to production needs an approval from someone other than the owner alice and the break-glass user carol (approved so far by: nobody)" in r.violations
	sprintf("break_glass: carol overrode %v (%v)", [unfair_violation, json.marshal(why)]) in r.violations
}

test_the_break_glass_users_own_approval_does_not_count if {
	approvals := [{"user": "Carol", "stage": "production", "at": "2024-05-01T12:00:00Z"}]
	r := result with input as {"model": unfair, "stage": "production", "approvals": approvals, "breakGlass": carol_breaks}
	r.decision == "require_approval"
	"approval_ignored: Carol broke the glass for this promotion, so their approval does not count; someone else must approve" in r.violations
}

test_the_owner_cannot_break_the_glass if {
	r := broken(unfair, bg_with({"user": "ALICE"}))
	denied_with(r, unfair_violation)
	"break_glass_ignored: ALICE authored the model and cannot break the glass on it (four eyes)" in r.violations
	not r.breakGlass
}

test_a_short_justification_does_not_count if {
	r := broken(unfair, bg_with({"justification": "  because I said so  "}))
	denied_with(r, unfair_violation)
	"break_glass_ignored: the justification \"because I said so\" is shorter than 20 characters" in r.violations
}

test_a_justification_of_exactly_the_minimum_counts if {
	broken(unfair, bg_with({"justification": "12345678901234567890"})).decision == "allow"
	broken(unfair, bg_with({"justification": "1234567890123456789"})).decision == "deny"
}

test_break_glass_for_another_artifact_does_not_count if {
	r := broken(unfair, bg_with({"sha256": concat("", ["f", substring(good_model.sha256, 1, -1)])}))
	denied_with(r, unfair_violation)
	some v in r.violations
	startswith(v, "break_glass_ignored: carol broke the glass for artifact f123")
}

test_break_glass_for_another_stage_does_not_count if {
	r := broken(unfair, bg_with({"stage": "staging"}))
	denied_with(r, unfair_violation)
	"break_glass_ignored: carol broke the glass for stage staging, not production" in r.violations
}

test_break_glass_without_a_model_digest_does_not_count if {
	r := broken(object.remove(unfair, ["sha256"]), carol_breaks)
	denied_with_rule(r, "sha256_missing")
	denied_with(r, unfair_violation)
}

test_break_glass_on_a_passing_model_is_still_shown if {
	r := broken(good_model, carol_breaks)
	r.decision == "allow"
	r.violations == [sprintf("break_glass: carol broke the glass for production, but no rule needed overriding (%v)", [json.marshal(why)])]
	r.breakGlass.overridden == []
}
