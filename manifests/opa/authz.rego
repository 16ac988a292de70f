# OPA's own API authorization (`opa run --authorization=basic`): only the aiml024 operator,
# with its bearer token, may query the aiml024 policies and read which bundles are loaded;
# nobody may change policies or data. Loaded as the bundle /bundles/authz (roots system/authz)
# from the aiml024-opa-authz ConfigMap. OPA queries data.system.authz.allow for every request.
package system.authz

import rego.v1

# The operator's token: the aiml024-opa-token Secret, given to OPA as $AIML024_OPA_TOKEN.
token := object.get(object.get(opa.runtime(), "env", {}), "AIML024_OPA_TOKEN", "")

# A token shorter than this is refused (`openssl rand -hex 32` gives 64 characters).
minimum_token_length := 32

default allow := {"allowed": false, "reason": "request refused by the aiml024 OPA authorization policy"}

# Kubelet probes carry no token: GET /health (and /health?bundles) is open, nothing else is.
allow := {"allowed": true} if {
	input.method == "GET"
	input.path == ["health"]
} else := {"allowed": true} if {
	authenticated
	permitted
}

authenticated if {
	is_string(token)
	count(token) >= minimum_token_length
	is_string(input.identity)
	input.identity == token
}

# Decisions: POST (or GET) /v1/data/aiml024/<package>/<rule>.
permitted if {
	input.method in {"GET", "POST"}
	count(input.path) >= 4
	array.slice(input.path, 0, 3) == ["v1", "data", "aiml024"]
	clean_path
}

# Which bundles (and revisions) are active: GET /v1/data/system/bundles[/...].
permitted if {
	input.method == "GET"
	array.slice(input.path, 0, 4) == ["v1", "data", "system", "bundles"]
	clean_path
}

# No empty, `.` or `..` segments and no escaped slashes: a path means what it says.
clean_path if {
	every segment in input.path {
		is_string(segment)
		not segment in {"", ".", ".."}
		not contains(segment, "/")
	}
}
