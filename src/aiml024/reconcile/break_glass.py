"""Break-glass: who may push a Model past the quality rules, and what is recorded. One set of
rules for the admission webhook, the operator and the local control plane.

A user with the right (in a cluster the verb `break-glass` on models, the aiml024-break-glass
role; the webhook asks the authorizer) asks with a written justification for the stage in
spec.stage; what is recorded is {user, groups, stage, justification, at, sha256}, appended to
the `aiml024.io/break-glass-records` annotation, which nobody can edit afterwards. A record
counts only for the artifact digest and the stage it names, never from the Model's author
(four eyes), and only with a justification of at least BREAK_GLASS_MIN_JUSTIFICATION
characters (aiml024.policy.counted_break_glass). The policy then lets the quality violations
through and lists each as overridden; integrity violations still deny (policies/README.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..api import Model, ModelStatus
from ..policy import (
    BREAK_GLASS_MIN_JUSTIFICATION,
    BREAKABLE_STAGES,
    break_glass_problem,
    break_glass_records,
)

Obj = dict[str, Any]
NOTE = "break_glass:"  # how the policy's result marks what a break-glass overrode


def break_glass_record(
    model: Model,
    user: str,
    stage: str,
    justification: str,
    now: datetime,
    groups: list[str] | None = None,
) -> tuple[Obj | None, str | None]:
    """The record written for the authenticated `user` breaking the glass to `stage`, or why
    not. It names the artifact digest the user saw; a model without one cannot be pushed."""
    name = model.metadata.name
    if stage not in BREAKABLE_STAGES:
        return None, (
            f"break-glass is for a stage the policy can deny ({', '.join(BREAKABLE_STAGES)}), "
            f"asked for together with it, not {stage!r}"
        )
    sha = (model.status or ModelStatus()).sha256
    if not sha:
        return None, f"model {name} has no registered artifact yet: there is nothing to push"
    text = justification.strip()
    if len(text) < BREAK_GLASS_MIN_JUSTIFICATION:
        return None, (
            f"a break-glass needs a written justification of at least "
            f"{BREAK_GLASS_MIN_JUSTIFICATION} characters (why, and which incident), not {text!r}"
        )
    record: Obj = {
        "user": user,
        "groups": sorted(groups or []),
        "stage": stage,
        "justification": text,
        "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": sha,
    }
    problem = break_glass_problem(model, record, stage)
    if problem:
        return None, problem
    return record, None


def with_record(annotations: dict[str, str], record: Obj) -> list[Obj]:
    """The records to store: those recorded so far and `record`."""
    return break_glass_records(annotations) + [record]


def notes(status: ModelStatus | None) -> list[str]:
    """What the recorded decision says a break-glass overrode (its `break_glass:` lines)."""
    decision = status.policy if status is not None else None
    if decision is None:
        return []
    return sorted(v for v in decision.violations if v.startswith(NOTE))


def newly_counted(before: ModelStatus | None, after: ModelStatus | None) -> bool:
    """Whether the new decision carries a break-glass the previous one did not (another user,
    justification, stage, digest or set of overridden rules): what is audited and reported
    once, not at every re-evaluation."""
    now = notes(after)
    return bool(now) and now != notes(before)


def event_message(status: ModelStatus | None) -> str:
    """The BreakGlass Event's message: what was overridden, by whom and why."""
    decision = status.policy if status is not None else None
    stage = decision.stage if decision is not None else "?"
    return f"stage {stage}: " + "; ".join(notes(status))
