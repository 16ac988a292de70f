"""The deployment gate: which Model versions may serve in which namespace (environment).

`deployment_input` builds the input document of `policies/deployment.rego` from a Deployment,
the Models its routes name and its namespace's labels; `evaluate_deployment` queries
data.aiml024.deployment.result over the same pinned policy set as the promotion gate and fails
closed the same way (every error is a deny with a `policy_error: ...` violation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiml024.api.common import ENVIRONMENT_LABEL
from aiml024.api.deployment import Deployment
from aiml024.api.model import Model

from .engine import PolicyEngine
from .gate import GateResult, decide

DEPLOYMENT_QUERY = "data.aiml024.deployment.result"
DEPLOYMENT_DECISIONS = ("allow", "deny")
__all__ = ["DEPLOYMENT_QUERY", "ENVIRONMENT_LABEL", "deployment_input", "evaluate_deployment"]


def _model_entry(role: str, name: str, model: Model | None) -> dict[str, Any]:
    status = model.status if model is not None else None
    decision = status.policy if status is not None else None
    return {
        "role": role,
        "name": name,
        "stage": status.stage if status is not None else None,
        "decision": decision.decision if decision is not None else None,
        "decisionStage": decision.stage if decision is not None else None,
        "sha256": status.sha256 if status is not None else None,
        "bundleDigest": decision.bundle_digest if decision is not None else None,
    }


def deployment_input(
    dep: Deployment, models: list[tuple[str, Model]], namespace_labels: dict[str, str]
) -> dict[str, Any]:
    """The input document of policies/deployment.rego (policies/README.md). Pure.

    `models` are (role, Model) for the Models found; a route of the Deployment whose Model is
    not among them still appears, with every field but role and name null, so the policy
    denies it as undecided.
    """
    entries = [_model_entry(role, model.metadata.name, model) for role, model in models]
    given = {(entry["role"], entry["name"]) for entry in entries}
    for route in dep.spec.routes():
        if (route.role, route.model) not in given:
            entries.append(_model_entry(route.role, route.model, None))
    return {
        "deployment": {
            "name": dep.metadata.name,
            "namespace": dep.metadata.namespace,
            "namespaceLabels": dict(namespace_labels),
            "requireStage": dep.spec.require_stage,
        },
        "models": entries,
    }


def evaluate_deployment(
    input_doc: dict[str, Any],
    policy_dir: Path,
    engine: PolicyEngine | None = None,
    *,
    expected_digest: str | None = None,
) -> GateResult:
    """Evaluate data.aiml024.deployment.result: allow or deny serving these Models here.

    GateResult.stage is the Deployment's requireStage.
    """
    deployment = input_doc.get("deployment") if isinstance(input_doc, dict) else None
    stage = deployment.get("requireStage") if isinstance(deployment, dict) else None
    return decide(
        DEPLOYMENT_QUERY,
        DEPLOYMENT_DECISIONS,
        lambda: input_doc,
        policy_dir,
        stage if isinstance(stage, str) else "",
        engine,
        expected_digest,
    )
