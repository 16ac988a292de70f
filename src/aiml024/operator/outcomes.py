"""The A/B test's outcomes in a cluster: the request log and the feedback clients report, read
back from the artifact store (`api.monitoring.monitor_root`: `requests/` and `feedback/`, JSON
Lines part files, written by the model servers). A small reader of its own: the runtime's
(aiml024.runtime.requestlog) needs pandas, which the operator does not carry. Only the
platform writes there, so what it reads back is trusted; a line that does not parse (a part
still being written) is skipped."""

from __future__ import annotations

import json
import posixpath
from fnmatch import fnmatch
from typing import Any

import fsspec

from ..api.monitoring import FEEDBACK, REQUESTS, monitor_root
from ..reconcile.rollout import ab_outcomes

PART = "part-*.jsonl"


def read_records(root: str, kind: str) -> list[dict[str, Any]]:
    """Every JSON object in `<root>/<kind>/**/part-*.jsonl`, in path order, then line order."""
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{kind}")
    try:
        paths = sorted(p for p in fs.find(base) if fnmatch(posixpath.basename(p), PART))
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for path in paths:
        with fs.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    return records


def outcomes(store: str, namespace: str, deployment: str) -> tuple[list[float], list[float]]:
    """(A, B) outcomes of `deployment`'s A/B test (reconcile.rollout.ab_outcomes)."""
    root = monitor_root(store, namespace, deployment)
    return ab_outcomes(read_records(root, REQUESTS), read_records(root, FEEDBACK))
