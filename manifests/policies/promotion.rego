# The product's promotion gate for Model versions. Input document: see README.md.
# Query data.aiml024.promotion.result -> {"decision": ..., "violations": [...]}.
# Thresholds are data (data.aiml024.thresholds, policies/data.json), not code.
package aiml024.promotion

import rego.v1

model := object.get(input, "model", {})

stage := object.get(input, "stage", null)

approvals := object.get(input, "approvals", [])

# The break-glass record that counts for this stage and digest (absent: none). See README.md.
break_glass := object.get(input, "breakGlass", null)

thresholds := data.aiml024.thresholds

lineage_fields := ["datasetFingerprint", "specHash", "codeVersion"]

known_stages := {"staging", "production", "archived"}

# --- result ------------------------------------------------------------------------------

result := {"decision": decision, "violations": sort(messages)} if {
	not break_glass_counts
} else := {
	"decision": decision,
	"violations": sort(messages),
	"breakGlass": {"user": break_glass.user, "stage": stage, "overridden": sort(overridden)},
}

default decision := "deny"

decision := "allow" if {
	stage == "archived"
} else := "deny" if {
	count(denying) > 0
} else := "allow" if {
	stage == "staging"
} else := "allow" if {
	stage == "production"
	four_eyes
} else := "require_approval" if {
	stage == "production"
}

messages := ((denying | waiting) | break_glass_notes) | break_glass_problems

# What denies: every violation, less the quality violations a counted break-glass overrode.
denying := {msg | some msg in violations; not msg in overridden}

waiting contains msg if {
	decision == "require_approval"
	count(required_groups) == 0
	msg := sprintf(
		"approval_required: promotion to production needs an approval from someone other than %v (approved so far by: %v)",
		[excluded_text, approvers_text],
	)
}

waiting contains msg if {
	decision == "require_approval"
	count(required_groups) > 0
	msg := sprintf(
		"approval_required: promotion to production needs an approval from someone other than %v who is in one of the groups %v (approved so far by: %v)",
		[excluded_text, concat(", ", sort(required_groups)), approvers_text],
	)
}

waiting contains msg if {
	decision == "require_approval"
	some a in production_approvals
	broke_the_glass(a.user)
	msg := sprintf(
		"approval_ignored: %v broke the glass for this promotion, so their approval does not count; someone else must approve",
		[a.user],
	)
}

# Why a recorded approval did not count (besides being the owner's).
waiting contains msg if {
	decision == "require_approval"
	some a in production_approvals
	not is_owner(a.user)
	not in_required_group(a)
	msg := sprintf(
		"approval_ignored: %v is not in any of the groups %v required to approve production (their groups: %v)",
		[a.user, concat(", ", sort(required_groups)), groups_text(a)],
	)
}

waiting contains msg if {
	decision == "require_approval"
	some a in production_approvals
	not is_owner(a.user)
	not approves_this_artifact(a)
	msg := sprintf(
		"approval_ignored: %v approved artifact %v, not this model's %v; approve this version again",
		[a.user, a.sha256, object.get(model, "sha256", null)],
	)
}

violations contains msg if {
	stage in {"staging", "production"}
	some msg in integrity_violations
}

violations contains msg if {
	stage == "production"
	some msg in quality_violations
}

violations contains msg if {
	not stage in known_stages
	msg := sprintf("unknown_stage: %v is not a stage; use staging, production or archived", [stage])
}

violations contains "policy_error: data.aiml024.thresholds is not loaded (policies/data.json)" if {
	stage == "production"
	not is_object(data.aiml024.thresholds)
}

violations contains msg if {
	stage == "production"
	configured := configured_groups
	not is_array(configured)
	msg := sprintf(
		"policy_error: thresholds.required_approver_groups.production must be a list of group names, not %v",
		[json.marshal(configured)],
	)
}

# --- staging and production: the artifact and where it came from --------------------------

integrity_violations contains "artifact_missing: the model has no artifactUri; register the model bundle first" if {
	not present(model, "artifactUri")
}

integrity_violations contains "sha256_missing: the model has no sha256 digest, so its artifact cannot be verified" if {
	not present(model, "sha256")
}

integrity_violations contains msg if {
	present(model, "sha256")
	not regex.match(`^[0-9a-f]{64}$`, model.sha256)
	msg := sprintf("sha256_invalid: %v is not a sha256 digest (64 lower-case hex characters)", [model.sha256])
}

integrity_violations contains msg if {
	missing := [f | some f in lineage_fields; not present(object.get(model, "lineage", {}), f)]
	count(missing) > 0
	msg := sprintf(
		"lineage_missing: lineage.%v not recorded; promotion needs the dataset fingerprint, spec hash and code version",
		[concat(", lineage.", missing)],
	)
}

# --- production only: quality and evidence -------------------------------------------------

quality_violations contains msg if {
	some metric, minimum in object.get(thresholds.minimum_metrics, model.task, {})
	not is_number(object.get(metrics, metric, null))
	msg := sprintf(
		"metric_missing: %v is required for %v models (minimum %v) but the model reports %v",
		[metric, model.task, num(minimum), reported(metrics)],
	)
}

quality_violations contains msg if {
	some metric, minimum in object.get(thresholds.minimum_metrics, model.task, {})
	value := metrics[metric]
	is_number(value)
	value < minimum
	msg := sprintf("metric_below_threshold: %v %v < %v", [metric, num(value), num(minimum)])
}

quality_violations contains "primary_metric_missing: the model names no primaryMetric, so it cannot be compared with its baseline" if {
	not present(model, "primaryMetric")
}

quality_violations contains msg if {
	present(model, "primaryMetric")
	not is_number(object.get(metrics, model.primaryMetric, null))
	msg := sprintf(
		"primary_metric_missing: primary metric %v is not among the model's metrics (%v)",
		[model.primaryMetric, reported(metrics)],
	)
}

quality_violations contains msg if {
	present(model, "primaryMetric")
	not is_number(object.get(baseline, model.primaryMetric, null))
	msg := sprintf(
		"baseline_missing: no baseline %v to compare against (baseline reports %v)",
		[model.primaryMetric, reported(baseline)],
	)
}

quality_violations contains msg if {
	name := model.primaryMetric
	value := metrics[name]
	base := baseline[name]
	is_number(value)
	is_number(base)
	not beats(name, value, base)
	msg := sprintf(
		"not_better_than_baseline: %v %v does not beat the baseline's %v (%v is better)",
		[name, num(value), num(base), direction(name)],
	)
}

quality_violations contains "model_card_missing: no model card (evidence.modelCardUri is not set)" if {
	not present(evidence, "modelCardUri")
}

quality_violations contains msg if {
	present(evidence, "modelCardUri")
	not evidence.modelCardComplete == true
	msg := sprintf("model_card_incomplete: the model card at %v is incomplete; fill in its missing sections", [evidence.modelCardUri])
}

quality_violations contains msg if {
	pii := object.get(evidence, "piiColumns", [])
	count(pii) > 0
	action := object.get(evidence, "piiAction", null)
	not action in {a | some a in thresholds.allowed_pii_actions}
	msg := sprintf(
		"pii_unhandled: PII columns %v were found and piiAction is %v; set piiAction to one of %v",
		[concat(", ", sort(pii)), json.marshal(action), concat(", ", thresholds.allowed_pii_actions)],
	)
}

# With pii.scan off nothing was looked for: "no PII found" cannot be claimed in production.
quality_violations contains "pii_unscanned: the data was not scanned for personal data (spec.pii.scan is false); scan it before production" if {
	object.get(evidence, "piiAction", null) == "unscanned"
}

# Fairness: evidence.fairness holds `<attribute>.demographic_parity_difference` and
# `<attribute>.equalized_odds_difference` for each attribute in evidence.sensitiveAttributes
# (spec.fairness.sensitiveAttributes). Every such figure recorded is judged, named or not.
quality_violations contains msg if {
	some name, value in fairness
	endswith(name, ".demographic_parity_difference")
	limit := thresholds.max_demographic_parity_difference
	is_number(value)
	value > limit
	msg := sprintf("fairness_demographic_parity: %v %v > %v", [name, num(value), num(limit)])
}

quality_violations contains msg if {
	some name, value in fairness
	endswith(name, ".equalized_odds_difference")
	limit := thresholds.max_equalized_odds_difference
	is_number(value)
	value > limit
	msg := sprintf("fairness_equalized_odds: %v %v > %v", [name, num(value), num(limit)])
}

# A figure that is not recorded (or not a number) cannot be judged: it denies. Regression
# makes no decisions, so it has no parity figures (its groups get error tables in the card).
quality_violations contains msg if {
	object.get(model, "task", null) != "regression"
	some attribute in sensitive_attributes
	missing := [key |
		some figure in fairness_figures
		key := sprintf("%v.%v", [attribute, figure])
		not is_number(object.get(fairness, key, null))
	]
	count(missing) > 0
	msg := sprintf(
		"fairness_missing: evidence.fairness has no %v; every sensitive attribute needs its demographic parity and equalized odds differences",
		[concat(", ", missing)],
	)
}

# Calibration: a classifier's probabilities must be calibrated (expected calibration error).
quality_violations contains msg if {
	model.task == "classification"
	not is_number(object.get(calibration, "ece", null))
	msg := sprintf(
		"calibration_missing: a classification model needs evidence.calibration.ece (expected calibration error on the holdout); the model reports %v",
		[reported(calibration)],
	)
}

quality_violations contains msg if {
	model.task == "classification"
	ece := calibration.ece
	is_number(ece)
	ece > thresholds.max_ece
	msg := sprintf("calibration_ece: expected calibration error %v > %v", [num(ece), num(thresholds.max_ece)])
}

# The run measures one-row latency of the served pipeline (evaluate's serving cost).
quality_violations contains msg if {
	latency := object.get(serving, "latencyP95Ms", null)
	is_number(latency)
	latency > thresholds.max_latency_p95_ms
	msg := sprintf(
		"latency_p95: the served pipeline answers one row in %v ms at p95 > %v ms",
		[num(latency), num(thresholds.max_latency_p95_ms)],
	)
}

# A limit that is not configured would let every figure through: deny instead.
quality_violations contains msg if {
	is_object(thresholds)
	some name in limit_settings
	not is_number(object.get(thresholds, name, null))
	msg := sprintf("policy_error: thresholds.%v is not a number (policies/data.json)", [name])
}

# --- four eyes -----------------------------------------------------------------------------

owner_name := model.owner if {
	present(model, "owner")
} else := "(unknown)"

# Whom an approval may not come from: the owner and, with a counted break-glass, its user.
excluded_text := sprintf("the owner %v and the break-glass user %v", [owner_name, break_glass.user]) if {
	break_glass_counts
} else := sprintf("the owner %v", [owner_name])

# An approval counts when it is for production, its user is not the owner (case-insensitive; when
# the owner is unknown, any named approver counts), the approver is in one of the groups
# thresholds.required_approver_groups names for the stage (any approver when the list is empty
# or missing) and, when the approval names an artifact digest, it is this model's digest.
counting_approvals contains a.user if {
	some a in production_approvals
	not is_owner(a.user)
	not broke_the_glass(a.user)
	in_required_group(a)
	approves_this_artifact(a)
}

production_approvals contains a if {
	some a in approvals
	a.stage == "production"
	present(a, "user")
}

configured_groups := object.get(object.get(thresholds, "required_approver_groups", {}), "production", []) if {
	is_object(thresholds)
	is_object(object.get(thresholds, "required_approver_groups", {}))
} else := object.get(thresholds, "required_approver_groups", null) if {
	is_object(thresholds)
}

required_groups := {g | some g in configured_groups}

in_required_group(_) if count(required_groups) == 0

in_required_group(a) if {
	some g in object.get(a, "groups", [])
	g in required_groups
}

approves_this_artifact(a) if not present(a, "sha256")

approves_this_artifact(a) if {
	present(a, "sha256")
	a.sha256 == object.get(model, "sha256", null)
}

groups_text(a) := concat(", ", sort(object.get(a, "groups", []))) if {
	count(object.get(a, "groups", [])) > 0
} else := "none"

is_owner(user) if {
	present(model, "owner")
	lower(trim_space(user)) == lower(trim_space(model.owner))
}

four_eyes if count(counting_approvals) > 0

production_approvers := {a.user | some a in approvals; a.stage == "production"}

approvers_text := concat(", ", sort(production_approvers)) if {
	count(production_approvers) > 0
} else := "nobody"

# --- break-glass -------------------------------------------------------------------------------

# A break-glass record {user, groups, stage, justification, at, sha256}, written by the admission
# webhook (or `aiml024 promote --break-glass`) for a user with the verb break-glass on models.
# It counts for the stage and the artifact digest it names, never from the owner (four eyes),
# and only with a written justification of at least min_justification characters. A counted
# break-glass overrides the quality violations (metrics, baseline, card, PII, fairness,
# calibration); integrity (artifact, digest, lineage), unknown stages and policy errors still
# deny, and production still needs an approval, from someone other than the owner and the user
# who broke the glass.

# The same minimum as aiml024.policy.gate.BREAK_GLASS_MIN_JUSTIFICATION (the webhook's check).
min_justification := 20

breakable_stages := {"staging", "production"}

break_glass_counts if {
	is_object(break_glass)
	count(break_glass_problems) == 0
}

overridden contains msg if {
	break_glass_counts
	stage == "production"
	some msg in quality_violations
	not startswith(msg, "policy_error:")
}

break_glass_notes contains msg if {
	some violation in overridden
	msg := sprintf("break_glass: %v overrode %v (%v)", [break_glass.user, violation, json.marshal(justification)])
}

break_glass_notes contains msg if {
	break_glass_counts
	count(overridden) == 0
	msg := sprintf(
		"break_glass: %v broke the glass for %v, but no rule needed overriding (%v)",
		[break_glass.user, stage, json.marshal(justification)],
	)
}

broke_the_glass(user) if {
	break_glass_counts
	lower(trim_space(user)) == lower(trim_space(break_glass.user))
}

justification := trim_space(break_glass.justification) if {
	is_object(break_glass)
	is_string(object.get(break_glass, "justification", null))
} else := ""

break_glass_user := break_glass.user if {
	is_object(break_glass)
	present(break_glass, "user")
} else := "(nobody)"

break_glass_problems contains "break_glass_ignored: the break-glass record names no user" if {
	is_object(break_glass)
	not present(break_glass, "user")
}

break_glass_problems contains msg if {
	is_object(break_glass)
	not object.get(break_glass, "stage", null) == stage
	msg := sprintf(
		"break_glass_ignored: %v broke the glass for stage %v, not %v",
		[break_glass_user, object.get(break_glass, "stage", null), stage],
	)
}

break_glass_problems contains msg if {
	is_object(break_glass)
	not stage in breakable_stages
	msg := sprintf("break_glass_ignored: break-glass applies to staging and production, not %v", [stage])
}

break_glass_problems contains msg if {
	is_object(break_glass)
	not break_glass_for_this_artifact
	msg := sprintf(
		"break_glass_ignored: %v broke the glass for artifact %v, not this model's %v",
		[break_glass_user, object.get(break_glass, "sha256", null), object.get(model, "sha256", null)],
	)
}

break_glass_problems contains msg if {
	is_object(break_glass)
	present(break_glass, "user")
	is_owner(break_glass.user)
	msg := sprintf(
		"break_glass_ignored: %v authored the model and cannot break the glass on it (four eyes)",
		[break_glass.user],
	)
}

break_glass_problems contains msg if {
	is_object(break_glass)
	count(justification) < min_justification
	msg := sprintf(
		"break_glass_ignored: the justification %v is shorter than %v characters",
		[json.marshal(justification), min_justification],
	)
}

break_glass_for_this_artifact if {
	present(model, "sha256")
	object.get(break_glass, "sha256", null) == model.sha256
}

# --- helpers -------------------------------------------------------------------------------

metrics := object.get(model, "metrics", {})

baseline := object.get(model, "baselineMetrics", {})

evidence := object.get(model, "evidence", {})

fairness := object.get(evidence, "fairness", {})

sensitive_attributes := object.get(evidence, "sensitiveAttributes", [])

calibration := object.get(evidence, "calibration", {})

serving := object.get(evidence, "serving", {})

fairness_figures := ["demographic_parity_difference", "equalized_odds_difference"]

limit_settings := ["max_demographic_parity_difference", "max_equalized_odds_difference", "max_ece", "max_latency_p95_ms"]

present(obj, key) if {
	is_string(obj[key])
	trim_space(obj[key]) != ""
}

lower_is_better(name) if name in {m | some m in thresholds.lower_is_better}

beats(name, value, base) if {
	lower_is_better(name)
	value < base
}

beats(name, value, base) if {
	not lower_is_better(name)
	value > base
}

direction(name) := "lower" if {
	lower_is_better(name)
} else := "higher"

reported(ms) := concat(", ", sort(object.keys(ms))) if {
	count(ms) > 0
} else := "none"

# Two decimals when that is exact, else four: 0.61 stays 0.61, 0.699 is not rounded to 0.70.
num(x) := s if {
	s := sprintf("%.2f", [x])
	abs(to_number(s) - x) < 0.00005
} else := sprintf("%.4f", [x])
