# Unit tests for deployment.rego. Run with `opa test --bundle policies/` or through pytest
# (tests/unit/test_policy_gate.py runs every test_ rule with regorus).
package aiml024.deployment

import rego.v1

env_label := "aiml024.io/environment"

stable := {
	"role": "stable",
	"name": "churn-v3",
	"stage": "production",
	"decision": "allow",
	"decisionStage": "production",
	"sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"bundleDigest": "sha256:abc",
}

canary := object.union(stable, {"role": "canary", "name": "churn-v4"})

in_env(env, require) := {
	"name": "churn",
	"namespace": "ml",
	"namespaceLabels": {env_label: env},
	"requireStage": require,
}

serving(dep, ms) := r if r := result with input as {"deployment": dep, "models": ms}

denied_with(r, msg) if {
	r.decision == "deny"
	msg in r.violations
}

denied_with_rule(r, rule) if {
	r.decision == "deny"
	some v in r.violations
	startswith(v, concat("", [rule, ":"]))
}

# --- allowed -----------------------------------------------------------------------------

test_production_models_serve_in_production if {
	serving(in_env("production", "production"), [stable, canary]) == {"decision": "allow", "violations": []}
}

test_any_stage_serves_in_development if {
	staged := object.union(stable, {"stage": "staging", "decisionStage": "staging"})
	serving(in_env("development", "any"), [staged]).decision == "allow"
}

test_staging_requirement_serves_a_production_model if {
	serving(in_env("staging", "staging"), [stable]).decision == "allow"
}

test_unlabelled_namespace_may_require_staging if {
	dep := object.remove(in_env("x", "staging"), ["namespaceLabels"])
	staged := object.union(stable, {"stage": "staging", "decisionStage": "staging"})
	serving(dep, [staged]).decision == "allow"
}

# --- the requirement against the namespace's environment ---------------------------------

test_stage_any_outside_development_is_denied if {
	r := serving(in_env("staging", "any"), [stable])
	r == {"decision": "deny", "violations": ["stage_any_outside_development: requireStage any is allowed only in namespaces labelled aiml024.io/environment=development; namespace ml is labelled aiml024.io/environment=staging"]}
}

test_stage_any_in_unlabelled_namespace_is_denied if {
	dep := object.remove(in_env("x", "any"), ["namespaceLabels"])
	denied_with(serving(dep, [stable]), "stage_any_outside_development: requireStage any is allowed only in namespaces labelled aiml024.io/environment=development; namespace ml is not labelled aiml024.io/environment")
}

test_production_namespace_requires_production if {
	r := serving(in_env("production", "staging"), [stable])
	r == {"decision": "deny", "violations": ["stage_below_environment_minimum: namespace ml is labelled aiml024.io/environment=production, so requireStage must be production, not staging"]}
}

test_production_namespace_refuses_any if {
	r := serving(in_env("production", "any"), [stable])
	denied_with_rule(r, "stage_below_environment_minimum")
	denied_with_rule(r, "stage_any_outside_development")
}

test_unknown_required_stage_is_denied if {
	denied_with(serving(in_env("development", "prod"), [stable]), `unknown_required_stage: requireStage "prod" is not one of any, production, staging`)
}

test_environments_are_data if {
	tuned := object.union(data.aiml024.serving, {"any_stage_environments": ["development", "sandbox"]})
	r := result with input as {"deployment": in_env("sandbox", "any"), "models": [stable]} with data.aiml024.serving as tuned
	r.decision == "allow"
}

# --- the models ------------------------------------------------------------------------------

test_model_without_decision_is_denied if {
	undecided := object.union(canary, {"decision": null, "decisionStage": null, "bundleDigest": null})
	r := serving(in_env("production", "production"), [stable, undecided])
	r == {"decision": "deny", "violations": ["model_no_decision: churn-v4 (canary) has no recorded policy decision; it has not been through the promotion gate (or does not exist)"]}
}

test_model_with_deny_decision_is_not_allowed if {
	refused := object.union(canary, {"decision": "deny"})
	denied_with(serving(in_env("production", "production"), [stable, refused]), "model_not_allowed: churn-v4 (canary) has decision deny for stage production; this deployment needs decision allow for production")
}

test_model_waiting_for_approval_is_not_allowed if {
	waiting := object.union(stable, {"decision": "require_approval", "stage": "staging"})
	denied_with_rule(serving(in_env("production", "production"), [waiting]), "model_not_allowed")
}

test_staging_decision_does_not_serve_production if {
	staged := object.union(stable, {"stage": "staging", "decisionStage": "staging"})
	r := serving(in_env("production", "production"), [staged])
	denied_with(r, "model_not_allowed: churn-v3 (stable) has decision allow for stage staging; this deployment needs decision allow for production")
	denied_with(r, "model_stage_below_required: churn-v3 (stable) is at stage staging; this deployment needs production")
}

test_archived_decision_serves_nowhere if {
	archived := object.union(stable, {"stage": "archived", "decisionStage": "archived"})
	r := serving(in_env("development", "any"), [archived])
	denied_with_rule(r, "model_not_allowed")
	denied_with_rule(r, "model_stage_below_required")
}

test_no_models_is_denied if {
	denied_with(serving(in_env("development", "any"), []), "no_models: the deployment names no model to serve")
}

test_missing_settings_deny if {
	r := result with input as {"deployment": in_env("production", "production"), "models": [stable]} with data.aiml024.serving as null
	denied_with(r, "policy_error: data.aiml024.serving is not loaded (policies/data.json)")
}
