"""Who may approve a Model, and which recorded approvals count: one set of rules for the
admission webhook, the operator and the local control plane.

An approval counts only for the artifact digest it names (a retrained or replaced artifact
needs new approvals), never from the Model's author (four eyes), once per person and stage.
Approvals arrive two ways: records the admission webhook (or the local control plane) wrote
for an authenticated user, and Ed25519-signed statements verified against the approvers
registry (aiml024.signing), which anyone (kubectl, Argo CD) may apply.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api import Model, ModelStatus
from ..api.common import APPROVALS, DEFAULT_NAMESPACE
from ..api.model import Approval
from ..signing import ApproverRegistry, verified_approvals

Obj = dict[str, Any]
APPROVABLE_STAGES = ("staging", "production", "archived")


def recorded_approvals(annotations: dict[str, str]) -> list[Obj]:
    """The approval records in the `aiml024.io/approvals` annotation (webhook-written JSON)."""
    try:
        records = json.loads(annotations.get(APPROVALS) or "[]")
    except ValueError:
        return []
    if not isinstance(records, list):
        return []
    return [r for r in records if isinstance(r, dict) and r.get("user") and r.get("stage")]


def approval_problem(model: Model, user: str, stage: str, counted: list[Approval]) -> str | None:
    """Why `user` may not approve `model` for `stage` given the approvals already counted."""
    owner = model.spec.owner
    if owner and user.lower() == owner.lower():
        return (
            f"{user} authored model {model.metadata.name} and cannot approve it "
            "(four eyes: another person must approve)"
        )
    if any(a.user.lower() == user.lower() and a.stage == stage for a in counted):
        return f"{user} has already approved model {model.metadata.name} for {stage}"
    return None


def counted_approvals(
    model: Model, records: list[Obj], signed: list[Approval] | None = None
) -> tuple[list[Approval], list[str]]:
    """(approvals that count, why the others do not), from webhook records and verified
    signed approvals. Each must name the Model's current artifact digest."""
    sha = (model.status or ModelStatus()).sha256
    counted: list[Approval] = []
    ignored: list[str] = []
    candidates: list[Approval] = []
    for record in records:
        try:
            candidates.append(Approval.model_validate(record))
        except ValidationError:
            ignored.append(f"an approval record of {record.get('user')!r} is malformed")
    for approval in [*candidates, *(signed or [])]:
        if not sha or approval.sha256 != sha:
            ignored.append(
                f"{approval.user}'s approval was for artifact {approval.sha256 or '(none)'}, "
                f"not the model's {sha or '(none yet)'}"
            )
            continue
        problem = approval_problem(model, approval.user, approval.stage, counted)
        if problem:
            ignored.append(problem)
        else:
            counted.append(approval)
    return counted, ignored


def model_approvals(
    model: Model, registry: ApproverRegistry | None, now: datetime, records: list[Obj] | None = None
) -> tuple[list[Approval], list[str]]:
    """Every approval of `model` that counts, and why the others do not: the webhook's records
    (`records`, default: the `aiml024.io/approvals` annotation) and the signed approvals in its
    `approval.aiml024.io/*` annotations, verified against `registry` (None: no registry, so no
    signed approval can count)."""
    annotations = model.metadata.annotations
    signed, ignored = verified_approvals(
        annotations,
        registry or ApproverRegistry(approvers=[]),
        model.metadata.name,
        model.metadata.namespace or DEFAULT_NAMESPACE,
        (model.status or ModelStatus()).sha256,
        now,
    )
    identity = recorded_approvals(annotations) if records is None else records
    counted, refused = counted_approvals(model, identity, signed)
    return counted, ignored + refused


def approval_record(
    model: Model,
    user: str,
    stage: str,
    now: datetime,
    comment: str = "",
    groups: list[str] | None = None,
    counted: list[Approval] | None = None,
) -> tuple[Obj | None, str | None]:
    """The record written for the authenticated `user` approving `stage`, or why not. It
    names the artifact digest the approver saw; a model without one cannot be approved yet."""
    if stage not in APPROVABLE_STAGES:
        return None, f"cannot approve stage {stage!r}: use {', '.join(APPROVABLE_STAGES)}"
    sha = (model.status or ModelStatus()).sha256
    if not sha:
        return None, (
            f"model {model.metadata.name} has no registered artifact yet: there is nothing "
            "to approve"
        )
    problem = approval_problem(model, user, stage, counted or [])
    if problem:
        return None, problem
    record: Obj = {
        "user": user,
        "stage": stage,
        "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": sha,
    }
    if groups:
        record["groups"] = sorted(groups)
    if comment:
        record["comment"] = comment
    return record, None
