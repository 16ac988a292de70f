"""Admission: what the CRD schemas cannot check, the policy gate on stage changes, identity.

Identity comes from the API server's userInfo on each request, never from the object:
- Experiment CREATE: `aiml024.io/applied-by` := the requesting user (kept on UPDATE).
- Model CREATE by a person: `spec.owner` := the requesting user (the operator, which creates
  Models for Experiments, sets the Experiment's author itself).
- Model approval: a user sets `aiml024.io/approve: <stage>`; the webhook replaces it with a
  record {user, stage, at, sha256} appended to `aiml024.io/approvals`, which nobody can edit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api import Deployment, Experiment, Model, describe_validation_error
from ..api.common import APPLIED_BY, APPROVALS, APPROVE
from ..compiler import CompileError, compile_experiment
from ..policy import promotion_decision
from . import policy
from .config import OperatorConfig
from .rules import approval_record, recorded_approvals, valid_approvals

Obj = dict[str, Any]


def _parse(kind: type[Experiment] | type[Model] | type[Deployment], body: Obj) -> Any:
    try:
        return kind.model_validate(dict(body))
    except ValidationError as error:
        raise kopf.AdmissionError("; ".join(describe_validation_error(error)), code=422) from None


def _user(userinfo: Obj) -> str:
    return str((userinfo or {}).get("username") or "")


def _annotations(body: Obj | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


# --- validation ------------------------------------------------------------------------------


def validate_experiment(config: OperatorConfig, body: Obj) -> None:
    exp = _parse(Experiment, body)
    try:
        compile_experiment(exp, config.compile)
    except CompileError as error:
        raise kopf.AdmissionError(str(error), code=422) from None


def validate_deployment(body: Obj) -> None:
    dep = _parse(Deployment, body)
    strategy = dep.spec.strategy
    for other in (strategy.canary, strategy.shadow):
        if other is not None and other.model == dep.spec.model:
            raise kopf.AdmissionError(
                f"spec.strategy: the {strategy.type} model must differ from spec.model "
                f"({dep.spec.model})",
                code=422,
            )


async def validate_model(config: OperatorConfig, body: Obj, old: Obj | None, user: str) -> None:
    """Immutable versions, and the policy gate when the desired stage changes."""
    model = _parse(Model, body)
    if old is not None:
        before = _parse(Model, old)
        if user != config.operator_user and model.spec.source != before.spec.source:
            raise kopf.AdmissionError(
                "spec.source is immutable: a Model is one version; register a new Model", code=422
            )
        if model.spec.stage == before.spec.stage:
            return
    if model.spec.stage in ("none", "archived") or not model.status:
        return  # archiving is always allowed; a new Model has no evidence yet (the operator gates)
    approvals, _ = valid_approvals(model, recorded_approvals(model.metadata.annotations))
    gate = await policy.gate(config, model, model.spec.stage, approvals)
    if gate.decision == "deny":
        _, why = promotion_decision(model, model.spec.stage, gate)
        raise kopf.AdmissionError(why, code=403)


# --- mutation (identity) ---------------------------------------------------------------------


def stamp_experiment(body: Obj, old: Obj | None, user: str, patch: kopf.Patch) -> None:
    author = _annotations(old).get(APPLIED_BY) if old is not None else user
    if author and _annotations(body).get(APPLIED_BY) != author:
        patch.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_BY] = author


def stamp_model(
    config: OperatorConfig, body: Obj, old: Obj | None, user: str, patch: kopf.Patch
) -> None:
    annotations = _annotations(body)
    changes: dict[str, Any] = {}
    if old is None:
        if user != config.operator_user:
            patch.setdefault("spec", {})["owner"] = user  # nobody authors in someone else's name
        if APPROVALS in annotations:
            changes[APPROVALS] = None  # approvals start empty: only the webhook records them
    else:
        if annotations.get(APPROVALS) != _annotations(old).get(APPROVALS):
            raise kopf.AdmissionError(
                f"{APPROVALS} is recorded by the admission webhook and cannot be changed; "
                f"approve with: kubectl annotate model {body['metadata']['name']} "
                f"{APPROVE}=<stage>",
                code=403,
            )
        owner = ((body.get("spec") or {}).get("owner"), (old.get("spec") or {}).get("owner"))
        if owner[0] != owner[1] and user != config.operator_user:
            raise kopf.AdmissionError("spec.owner is immutable", code=403)
    stage = annotations.get(APPROVE)
    if stage is not None:
        model = _parse(Model, old if old is not None else body)
        record, problem = approval_record(model, user, stage.strip(), datetime.now(UTC))
        if problem:
            raise kopf.AdmissionError(problem, code=403)
        records = recorded_approvals(_annotations(old)) + [record]
        changes[APPROVE] = None
        changes[APPROVALS] = json.dumps(records, separators=(",", ":"))
    if changes:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(changes)
