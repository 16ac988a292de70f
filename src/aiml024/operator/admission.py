"""Admission: what the CRD schemas cannot check, the policy gate on stage changes, identity.

Identity comes from the API server's userInfo on each request, never from the object:
- Experiment CREATE, and UPDATE that changes the spec: `aiml024.io/applied-by` := the
  requesting user (the author of the Models that spec trains; kept on other updates). The one
  exception is the operator's retrain patch: it names the author itself (the author of the
  Deployment whose retrain instruction chose the new data), never the operator.
- Deployment CREATE, and UPDATE that changes the spec: `aiml024.io/applied-by` := the
  requesting user (the author of its monitors' retrain instructions; kept on other updates).
- Model CREATE by a person: `spec.owner` := the requesting user (the operator, which creates
  Models for Experiments, sets the Experiment's author itself).
- Model approval by a Kubernetes identity: a user the authorizer allows to `approve` models
  (the aiml024-approver role) sets `aiml024.io/approve: <stage>`; the webhook replaces it with
  a record {user, groups, stage, at, sha256} appended to `aiml024.io/approvals`, which nobody
  can edit.
- Break-glass by a Kubernetes identity: a user the authorizer allows to `break-glass` models
  (the aiml024-break-glass role) sets `aiml024.io/break-glass: <justification>` with the
  desired spec.stage; the webhook replaces it with a record {user, groups, stage,
  justification, at, sha256} appended to `aiml024.io/break-glass-records`, which nobody can
  edit. It refuses the author, a short justification and a model without a digest.
- Signed approvals (`approval.aiml024.io/<key>`) may be applied by anyone, e.g. Argo CD: they
  must verify against the approvers registry and the Model's digest, or they are refused.
- Model status (the `models/status` subresource): only the operator writes it, and it may
  raise the stage only as far as a recorded allow decision for the current digest reaches.
"""

from __future__ import annotations

import json
from typing import Any

import kopf
from pydantic import ValidationError

from ..api import (
    Deployment,
    Experiment,
    Model,
    ModelStatus,
    describe_validation_error,
    unsupported,
)
from ..api.common import (
    APPLIED_BY,
    APPROVALS,
    APPROVE,
    BREAK_GLASS,
    BREAK_GLASS_RECORDS,
    DEFAULT_NAMESPACE,
)
from ..compiler import CompileError
from ..policy import promotion_decision
from ..reconcile import approvals as approval_rules
from ..reconcile import break_glass as break_glass_rules
from ..reconcile.clock import now as _now
from ..reconcile.model import stage_reaches
from ..signing import is_approval_annotation
from . import policy
from .config import OperatorConfig
from .deployment import deployment_policy_gate
from .experiment import compile_for_cluster
from .kube import MODELS, Kube
from .model import approvers

Obj = dict[str, Any]


def _parse(kind: type[Experiment] | type[Model] | type[Deployment], body: Obj) -> Any:
    try:
        return kind.model_validate(dict(body))
    except ValidationError as error:
        raise kopf.AdmissionError("; ".join(describe_validation_error(error)), code=422) from None


def user_of(userinfo: Obj) -> str:
    return str((userinfo or {}).get("username") or "")


def _groups(userinfo: Obj) -> list[str]:
    return [str(g) for g in (userinfo or {}).get("groups") or []]


def _annotations(body: Obj | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


# --- validation ------------------------------------------------------------------------------


def _refuse_unsupported(obj: Experiment | Model | Deployment, old: Obj | None) -> None:
    """Refuse a field the platform does not do yet (api.unsupported); on an update only what
    the update adds, so objects stored before a field was refused can still be changed."""
    before = None
    if old is not None:
        try:
            before = type(obj).model_validate(dict(old))
        except ValidationError:
            pass
    problems = unsupported(obj, before)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


def validate_experiment(config: OperatorConfig, body: Obj, old: Obj | None) -> None:
    exp = _parse(Experiment, body)
    _refuse_unsupported(exp, old)
    if unsupported(exp):
        return  # stored before the field was refused; the operator reports it as InvalidSpec
    try:
        compile_for_cluster(exp, config)
    except CompileError as error:
        raise kopf.AdmissionError(str(error), code=422) from None


async def validate_deployment(
    kube: Kube, config: OperatorConfig, body: Obj, old: Obj | None
) -> None:
    """The spec's own rules, then the deployment policy over the Models it names as they are
    recorded now (the operator asks again before every change it makes to what serves)."""
    dep = _parse(Deployment, body)
    _refuse_unsupported(dep, old)
    strategy = dep.spec.strategy
    for other in (strategy.canary, strategy.shadow):
        if other is not None and other.model == dep.spec.model:
            raise kopf.AdmissionError(
                f"spec.strategy: the {strategy.type} model must differ from spec.model "
                f"({dep.spec.model})",
                code=422,
            )
    gate = await deployment_policy_gate(kube, config, dep)
    if gate.decision != "allow":
        raise kopf.AdmissionError(
            f"deployment {dep.metadata.name} refused by the deployment policy: "
            + "; ".join(gate.violations),
            code=403,
        )


async def validate_model(config: OperatorConfig, body: Obj, old: Obj | None, user: str) -> None:
    """Immutable versions, and the policy gate when the desired stage changes."""
    model = _parse(Model, body)
    _refuse_unsupported(model, old)
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
    approvals, _ = approval_rules.model_approvals(model, approvers(config), _now())
    gate = await policy.gate(config, model, model.spec.stage, approvals)
    if gate.decision == "deny":
        _, why = promotion_decision(model, model.spec.stage, gate)
        raise kopf.AdmissionError(why, code=403)


# --- mutation (identity) ---------------------------------------------------------------------


def _stamp_author(body: Obj, author: str | None, patch: kopf.Patch) -> None:
    """Make `aiml024.io/applied-by` say `author` (or nothing, where nobody is recorded): what
    the request itself wrote there never stands."""
    if _annotations(body).get(APPLIED_BY) != author:
        patch.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_BY] = author


def _spec_changed(body: Obj, old: Obj | None) -> bool:
    return old is None or old.get("spec") != body.get("spec")


def stamp_experiment(
    config: OperatorConfig, body: Obj, old: Obj | None, user: str, patch: kopf.Patch
) -> None:
    """The author is whoever last changed the spec (four eyes holds against every editor of
    what a model was trained on, not only against whoever created the Experiment).

    The operator changes the spec only for a drift monitor's retrain, and then names the
    author itself: the Deployment's author, who wrote the retrain instruction and so chose the
    new training data (aiml024.operator.monitors). It never becomes the author itself: without
    a name from it, the previous author stays."""
    recorded = _annotations(old).get(APPLIED_BY) or None
    if not _spec_changed(body, old):
        author = recorded
    elif user == config.operator_user:
        named = _annotations(body).get(APPLIED_BY) or None
        author = named if named is not None and named != config.operator_user else recorded
    else:
        author = user
    _stamp_author(body, author, patch)


def stamp_deployment(body: Obj, old: Obj | None, user: str, patch: kopf.Patch) -> None:
    """The author is whoever last changed the spec: the retrain instructions of its monitors
    (`retrain.dataUri`, the data a retrained Model learns from) are theirs, and so is the
    retrained Model (four eyes: they cannot approve it)."""
    author = user if _spec_changed(body, old) else (_annotations(old).get(APPLIED_BY) or None)
    _stamp_author(body, author, patch)


async def stamp_model(
    kube: Kube,
    config: OperatorConfig,
    body: Obj,
    old: Obj | None,
    userinfo: Obj,
    patch: kopf.Patch,
) -> None:
    user = user_of(userinfo)
    annotations = _annotations(body)
    changes: dict[str, Any] = {}
    if old is None:
        if user != config.operator_user:
            patch.setdefault("spec", {})["owner"] = user  # nobody authors in someone else's name
        for key in (APPROVALS, BREAK_GLASS_RECORDS):
            if key in annotations:
                changes[key] = None  # records start empty: only the webhook writes them
    else:
        if annotations.get(APPROVALS) != _annotations(old).get(APPROVALS):
            raise kopf.AdmissionError(
                f"{APPROVALS} is recorded by the admission webhook and cannot be changed; "
                f"approve with: kubectl annotate model {body['metadata']['name']} "
                f"{APPROVE}=<stage>, or apply a signed approval (aiml024 approve --sha256)",
                code=403,
            )
        if annotations.get(BREAK_GLASS_RECORDS) != _annotations(old).get(BREAK_GLASS_RECORDS):
            raise kopf.AdmissionError(
                f"{BREAK_GLASS_RECORDS} is recorded by the admission webhook and cannot be "
                f"changed; break the glass with {BREAK_GLASS}=<justification> and the desired "
                "spec.stage in one request (the aiml024-break-glass role)",
                code=403,
            )
        owner = ((body.get("spec") or {}).get("owner"), (old.get("spec") or {}).get("owner"))
        if owner[0] != owner[1] and user != config.operator_user:
            raise kopf.AdmissionError("spec.owner is immutable", code=403)
    _check_signed_approvals(config, body, old)
    stage = annotations.get(APPROVE)
    if stage is not None:
        model = _parse(Model, old if old is not None else body)
        meta = model.metadata
        if not await _may(kube, userinfo, "approve", model):
            raise kopf.AdmissionError(
                f"{user} may not approve models in namespace {meta.namespace}: approving needs "
                "the aiml024-approver role (verb approve on models), or a signed approval",
                code=403,
            )
        counted, _ = approval_rules.model_approvals(model, approvers(config), _now())
        record, problem = approval_rules.approval_record(
            model, user, stage.strip(), _now(), groups=_groups(userinfo), counted=counted
        )
        if record is None:
            raise kopf.AdmissionError(problem or "cannot approve", code=403)
        records = approval_rules.recorded_approvals(_annotations(old)) + [record]
        changes[APPROVE] = None
        changes[APPROVALS] = json.dumps(records, separators=(",", ":"))
    justification = annotations.get(BREAK_GLASS)
    if justification is not None:
        changes.update(await _break_glass(kube, body, old, userinfo, justification))
    if changes:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(changes)


async def _may(kube: Kube, userinfo: Obj, verb: str, model: Model) -> bool:
    """Whether the API server's authorizer lets the requesting user do `verb` on this model."""
    meta = model.metadata
    return await kube.allowed(
        user_of(userinfo),
        _groups(userinfo),
        verb,
        MODELS,
        meta.namespace or DEFAULT_NAMESPACE,
        meta.name,
    )


async def _break_glass(
    kube: Kube, body: Obj, old: Obj | None, userinfo: Obj, justification: str
) -> dict[str, Any]:
    """Replace a break-glass request by its record, for a user the authorizer allows the verb
    break-glass on this model; the stage is the one this request asks for (spec.stage)."""
    user = user_of(userinfo)
    model = _parse(Model, old if old is not None else body)
    meta = model.metadata
    if not await _may(kube, userinfo, "break-glass", model):
        raise kopf.AdmissionError(
            f"{user} may not break the glass on models in namespace {meta.namespace}: it needs "
            "the aiml024-break-glass role (verb break-glass on models)",
            code=403,
        )
    stage = _parse(Model, body).spec.stage
    record, problem = break_glass_rules.break_glass_record(
        model, user, stage, justification, _now(), groups=_groups(userinfo)
    )
    if record is None:
        raise kopf.AdmissionError(problem or "cannot break the glass", code=403)
    records = break_glass_rules.with_record(_annotations(old), record)
    return {BREAK_GLASS: None, BREAK_GLASS_RECORDS: json.dumps(records, separators=(",", ":"))}


def _check_signed_approvals(config: OperatorConfig, body: Obj, old: Obj | None) -> None:
    """Signed approvals added or changed by this request must verify now (the operator
    verifies them again on every evaluation)."""
    before = _annotations(old)
    added = {
        k: v
        for k, v in _annotations(body).items()
        if is_approval_annotation(k) and before.get(k) != v
    }
    if not added:
        return
    model = _parse(Model, old if old is not None else body)
    probe = model.model_copy(deep=True)
    probe.metadata.annotations = added
    counted, ignored = approval_rules.model_approvals(probe, approvers(config), _now(), [])
    if ignored or not counted:
        raise kopf.AdmissionError(
            "signed approval refused: " + "; ".join(ignored or ["it does not verify"]), code=403
        )


def validate_model_status(config: OperatorConfig, body: Obj, old: Obj | None, user: str) -> None:
    """The status subresource is the operator's record: nobody else writes it, and the stage
    it records rises only as far as a recorded allow decision for this digest reaches."""
    if user != config.operator_user:
        raise kopf.AdmissionError(
            "models/status is written by the aiml024 operator only: the stage moves through "
            "spec.stage, the policy and approvals",
            code=403,
        )
    status = _parse(Model, body).status or ModelStatus()
    before = (_parse(Model, old).status if old is not None else None) or ModelStatus()
    rises = not stage_reaches(before.stage, status.stage) or status.stage == "archived"
    if status.stage != before.stage and rises:
        decision = status.policy
        if (
            decision is None
            or decision.decision != "allow"
            or decision.stage != status.stage
            or decision.sha256 != status.sha256
        ):
            raise kopf.AdmissionError(
                f"status.stage {status.stage}: no recorded allow decision for that stage and "
                "this artifact digest",
                code=403,
            )
