"""The A/B test's outcomes in a cluster: the request log and the feedback clients report, read
back from the artifact store (`api.monitoring.monitor_root`: `requests/` and `feedback/`, JSON
Lines part files, written by the model servers). Read with aiml024.servinglog, the
reader every side shares. Only the platform writes there, so what it reads back is trusted."""

from __future__ import annotations

from ..api.monitoring import FEEDBACK, REQUESTS, monitor_root
from ..reconcile.rollout import ab_outcomes
from ..servinglog import read_records


def outcomes(store: str, namespace: str, deployment: str) -> tuple[list[float], list[float]]:
    """(A, B) outcomes of `deployment`'s A/B test (reconcile.rollout.ab_outcomes)."""
    root = monitor_root(store, namespace, deployment)
    return ab_outcomes(read_records(root, REQUESTS), read_records(root, FEEDBACK))
