# Which Model versions may serve where. Input document: see README.md.
# Query data.aiml024.deployment.result -> {"decision": "allow" | "deny", "violations": [...]}.
# Settings are data (data.aiml024.serving, policies/data.json), not code.
package aiml024.deployment

import rego.v1

deployment := object.get(input, "deployment", {})

models := object.get(input, "models", [])

settings := data.aiml024.serving

require_stage := object.get(deployment, "requireStage", null)

namespace := object.get(deployment, "namespace", null)

label := settings.environment_label

environment := object.get(object.get(deployment, "namespaceLabels", {}), label, null)

# --- result ------------------------------------------------------------------------------

result := {"decision": decision, "violations": sort(violations)}

default decision := "deny"

# Allow only with the settings loaded and nothing violated.
decision := "allow" if {
	is_object(data.aiml024.serving)
	count(violations) == 0
}

violations contains "policy_error: data.aiml024.serving is not loaded (policies/data.json)" if {
	not is_object(data.aiml024.serving)
}

# --- the deployment's own requirement, against its namespace's environment ---------------

known_requirements := {"any"} | {s | some s in settings.servable_stages}

violations contains msg if {
	not require_stage in known_requirements
	msg := sprintf(
		"unknown_required_stage: requireStage %v is not one of %v",
		[json.marshal(require_stage), concat(", ", sort(known_requirements))],
	)
}

violations contains msg if {
	require_stage == "any"
	not environment in {e | some e in settings.any_stage_environments}
	msg := sprintf(
		"stage_any_outside_development: requireStage any is allowed only in namespaces labelled %v=%v; namespace %v is %v",
		[label, concat(" or ", settings.any_stage_environments), namespace, environment_text],
	)
}

violations contains msg if {
	minimum := settings.minimum_stage[environment]
	not at_least(require_stage, minimum)
	msg := sprintf(
		"stage_below_environment_minimum: namespace %v is %v, so requireStage must be %v, not %v",
		[namespace, environment_text, concat(" or ", stages_from(minimum)), require_stage],
	)
}

# --- every model the deployment serves ------------------------------------------------------

violations contains "no_models: the deployment names no model to serve" if {
	count(models) == 0
}

violations contains msg if {
	some m in models
	object.get(m, "decision", null) == null
	msg := sprintf(
		"model_no_decision: %v (%v) has no recorded policy decision; it has not been through the promotion gate (or does not exist)",
		[model_name(m), object.get(m, "role", null)],
	)
}

violations contains msg if {
	some m in models
	verdict := object.get(m, "decision", null)
	verdict != null
	not decision_allows(m)
	msg := sprintf(
		"model_not_allowed: %v (%v) has decision %v for stage %v; this deployment needs decision allow for %v",
		[model_name(m), object.get(m, "role", null), verdict, object.get(m, "decisionStage", null), needed_text],
	)
}

violations contains msg if {
	some m in models
	object.get(m, "decision", null) != null
	not stage_serves(m)
	msg := sprintf(
		"model_stage_below_required: %v (%v) is at stage %v; this deployment needs %v",
		[model_name(m), object.get(m, "role", null), object.get(m, "stage", null), needed_text],
	)
}

# --- helpers -------------------------------------------------------------------------------

# servable_stages is ordered, least strict first: staging < production.
rank(s) := i if {
	some i, x in settings.servable_stages
	x == s
}

required_rank := 0 if require_stage == "any"

required_rank := rank(require_stage) if require_stage != "any"

at_least(s, minimum) if {
	s != "any"
	rank(s) >= rank(minimum)
}

stages_from(minimum) := [s | some i, s in settings.servable_stages; i >= rank(minimum)]

needed_text := concat(" or ", [s | some i, s in settings.servable_stages; i >= required_rank])

decision_allows(m) if {
	m.decision == "allow"
	rank(m.decisionStage) >= required_rank
}

stage_serves(m) if rank(m.stage) >= required_rank

model_name(m) := object.get(m, "name", "(unnamed)")

environment_text := sprintf("labelled %v=%v", [label, environment]) if {
	is_string(environment)
} else := sprintf("not labelled %v", [label])
