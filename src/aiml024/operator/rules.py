"""Pure decisions that only the cluster needs (what Argo, Seldon and the webhook report).

Like aiml024.reconcile: functions of objects and observations, no API client, no kopf, no
clock (the caller passes `now`). Candidates to move into aiml024.reconcile.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from ..api import Experiment, Model, ModelStatus
from ..api.common import APPROVALS
from ..api.model import Approval
from ..reconcile import model as model_rules

Obj = dict[str, Any]
FINISHED = ("Succeeded", "Failed")
_PROGRESS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# --- Experiment ---------------------------------------------------------------------------


def needs_workflow(exp: Experiment, workflow_name: str) -> bool:
    """Whether the Workflow for this generation must exist. Not once it has finished and its
    outcome is recorded: Argo's TTL deletes finished Workflows, which must not rerun them."""
    status = exp.status
    return not (
        status is not None
        and status.workflow_name == workflow_name
        and status.observed_generation == (exp.metadata.generation or 1)
        and status.phase in FINISHED
    )


def search_progress(workflow_status: Obj | None) -> tuple[int, float | None] | None:
    """(trials done, best so far) from the search node's self-reported Argo progress "N/M"
    (the search step writes it to $ARGO_PROGRESS_FILE); None when Argo reports none."""
    for node in ((workflow_status or {}).get("nodes") or {}).values():
        if node.get("displayName") == "search":
            match = _PROGRESS.match(str(node.get("progress") or ""))
            if match:
                return int(match.group(1)), None
    return None


# --- Model: approvals recorded by the admission webhook ------------------------------------


def recorded_approvals(annotations: dict[str, str]) -> list[Obj]:
    """The approval records in the `aiml024.io/approvals` annotation (webhook-written JSON)."""
    try:
        records = json.loads(annotations.get(APPROVALS) or "[]")
    except ValueError:
        return []
    return [r for r in records if isinstance(r, dict) and r.get("user") and r.get("stage")]


def valid_approvals(model: Model, records: list[Obj]) -> tuple[list[Approval], list[str]]:
    """(approvals that count, why others do not). An approval is for one artifact digest:
    a retrained version under the same name needs new approvals; the owner's never counts."""
    sha = (model.status or ModelStatus()).sha256
    counted: list[Approval] = []
    ignored: list[str] = []
    for record in records:
        if record.get("sha256") and sha and record["sha256"] != sha:
            ignored.append(f"{record['user']}'s approval was for another artifact")
            continue
        approval = Approval(
            user=record["user"],
            stage=record["stage"],
            at=record["at"],
            comment=record.get("comment", ""),
        )
        probe = model.model_copy(deep=True)
        probe.status = (model.status or ModelStatus()).model_copy(update={"approvals": counted})
        problem = model_rules.approval_problem(probe, approval.user, approval.stage)
        if problem:
            ignored.append(problem)
        else:
            counted.append(approval)
    return counted, ignored


def approval_record(
    model: Model, user: str, stage: str, now: datetime, comment: str = ""
) -> tuple[Obj | None, str | None]:
    """The record the webhook appends for `user` approving `stage`, or why it refuses."""
    if stage not in ("staging", "production", "archived"):
        return None, f"cannot approve stage {stage!r}: use staging, production or archived"
    counted, _ = valid_approvals(model, recorded_approvals(model.metadata.annotations))
    probe = model.model_copy(deep=True)
    probe.status = (model.status or ModelStatus()).model_copy(update={"approvals": counted})
    problem = model_rules.approval_problem(probe, user, stage)
    if problem:
        return None, problem
    record: Obj = {"user": user, "stage": stage, "at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if comment:
        record["comment"] = comment
    if model.status is not None and model.status.sha256:
        record["sha256"] = model.status.sha256
    return record, None


# --- Deployment: what Seldon reports ---------------------------------------------------------


def seldon_ready(seldon: Obj | None) -> tuple[bool, str | None, str]:
    """(available, endpoint, why not) from a SeldonDeployment's status."""
    if seldon is None:
        return False, None, "the SeldonDeployment does not exist yet"
    status = seldon.get("status") or {}
    state = status.get("state") or "Creating"
    if state != "Available":
        reason = status.get("description") or f"SeldonDeployment is {state}"
        return False, None, reason
    address = (status.get("address") or {}).get("url")
    meta = seldon["metadata"]
    endpoint = address or f"http://{meta['name']}.{meta.get('namespace', 'default')}.svc:8000"
    return True, endpoint, ""


def live_split(seldon: Obj | None) -> dict[str, int]:
    """predictor -> percent of live traffic, as the SeldonDeployment routes it now."""
    predictors = ((seldon or {}).get("spec") or {}).get("predictors") or []
    return {p["name"]: int(p.get("traffic", 0)) for p in predictors if not p.get("shadow")}
