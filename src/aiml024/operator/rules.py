"""Pure decisions that only the cluster needs (what Argo, Seldon and the webhook report).

Like aiml024.reconcile: functions of objects and observations, no API client, no kopf, no
clock (the caller passes `now`). Candidates to move into aiml024.reconcile.
"""

from __future__ import annotations

import re
from typing import Any

from ..api import Experiment

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
