"""Model: gate the desired stage through the policy, with the approvals the webhook recorded.

The actual stage (status.stage) moves only when the policy allows; the decision, its violated
rules and the policy bundle digest are recorded (aiml024.reconcile.model.status_after_gate).
"""

from __future__ import annotations

import logging

import kopf
from pydantic import ValidationError

from .. import audit
from ..api import Model, ModelStatus
from ..policy import GateResult, counted_break_glass
from ..reconcile import approvals as approval_rules
from ..reconcile import break_glass as break_glass_rules
from ..reconcile import model as model_rules
from ..reconcile.clock import now as _now
from ..signing import ApproverRegistry, SigningError, default_registry_path, load_registry
from . import policy
from .config import OperatorConfig
from .kube import MODELS, Kube, settle

log = logging.getLogger(__name__)


def approvers(config: OperatorConfig) -> ApproverRegistry | None:
    """The approvers registry (the risk team's ConfigMap, mounted as a file); None without
    one, so that no signed approval counts. A broken registry counts nobody, and says so."""
    path = default_registry_path(config.policy_dir)
    try:
        return load_registry(path) if path.exists() else None
    except SigningError as error:
        log.error("approvers registry refused: %s", error)
        return None


async def reconcile(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    await settle(f"model {name}", lambda: _gate_once(kube, config, namespace, name))


async def _gate_once(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    body = await kube.get(MODELS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    try:
        model = model_rules.with_source_artifact(Model.model_validate(body))
    except ValidationError as error:
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        return
    status = model.status or ModelStatus()
    if model.spec.source.experiment and not status.sha256:
        return  # registering: the Experiment writes the evidence, then gates
    approvals, ignored = approval_rules.model_approvals(model, approvers(config), _now())
    model.status = status.model_copy(update={"approvals": approvals})
    # The policy input carries the break-glass recorded for this stage and digest, if any.
    broken, not_counted = counted_break_glass(model, model.spec.stage)
    gate = await policy.gate(config, model, model.spec.stage, approvals)
    decided = model_rules.status_after_gate(model, gate, _now())
    if await kube.replace_status(MODELS, body, decided.wire()) is not None:
        await _report(config, body, status, decided, ignored, (broken, not_counted, gate))


async def _report(
    config: OperatorConfig,
    body: dict,
    before: ModelStatus,
    after: ModelStatus,
    ignored: list[str],
    break_glass: tuple[dict | None, list[str], GateResult] | None = None,
) -> None:
    """One event per new decision (not per re-evaluation of the same one), and its entries in
    the audit log. `break_glass`: (the record that counted or None, why others did not, the
    gate's result)."""
    broken, not_counted, gate = break_glass or (None, [], None)
    new, old = after.policy, before.policy
    assert new is not None
    same = (
        old is not None
        and (old.decision, old.violations, old.stage) == (new.decision, new.violations, new.stage)
        and before.stage == after.stage
    )
    if same and before.approvals == after.approvals:
        return
    kind, reason, message = model_rules.gate_event(new)
    kopf.event(body, type=kind, reason=reason, message=message)
    if after.stage != before.stage:
        kopf.info(body, reason="Promoted", message=f"now in stage {after.stage}")
    for why in ignored:
        kopf.warn(body, reason="ApprovalIgnored", message=why)
    for why in not_counted:
        kopf.warn(body, reason="BreakGlassIgnored", message=why)
    if broken is not None and break_glass_rules.newly_counted(before, after):
        kopf.warn(body, reason="BreakGlass", message=break_glass_rules.event_message(after))
    subject = audit.subject_of(body)
    records = audit.gate_records(
        subject, before, after, config.operator_user,
        break_glass=broken, overridden=gate.overridden if gate is not None else None,
    )  # fmt: skip
    await record_audit(config, body, records)


async def record_audit(config: OperatorConfig, body: dict, records: list[audit.Record]) -> None:
    """Append `records` to the audit log in the store (config.audit_root), each mirrored as an
    AuditRecorded Event on `body`. A store that cannot be written is reported (AuditFailed
    Event, error log), not raised: the decision is already recorded in status."""
    try:
        entries = await audit.record_async(config.audit_root, records)
    except Exception as error:  # any store failure (credentials, network, a broken chain)
        log.error("audit log under %s: %s", config.audit_root, error)
        kopf.warn(body, reason="AuditFailed", message=f"not recorded in the audit log: {error}")
        return
    for entry in entries:
        type_, reason, message = audit.event(entry)
        kopf.event(body, type=type_, reason=reason, message=message)
