"""What an Experiment's Argo Workflow means for it: whether this generation still needs one,
and how far its search got (what Argo reports; the operator reads it, the local executor
reports progress through its own events)."""

from __future__ import annotations

import re
from typing import Any

from ..api import Experiment

Obj = dict[str, Any]
FINISHED = ("Succeeded", "Failed")
_PROGRESS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


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
