"""The warm-start portfolio: strong configurations per task kind, learned offline.

`build.py` (run by hand: `python -m aiml024.runtime.portfolio.build`) writes `binary.json`,
`multiclass.json` and `regression.json` here from synthetic data only. The search enqueues
these configurations before the sampler takes over.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KINDS = ("binary", "multiclass", "regression")


def task_kind(task: str, n_classes: int) -> str:
    if task == "regression":
        return "regression"
    return "binary" if n_classes <= 2 else "multiclass"


@cache
def load(kind: str) -> dict[str, Any]:
    """The portfolio document of one task kind (an empty one when it is not shipped)."""
    path = HERE / f"{kind}.json"
    if kind not in KINDS or not path.exists():
        return {"kind": kind, "configs": []}
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def configs(kind: str, learner: str) -> list[dict[str, Any]]:
    """The params of one learner's portfolio configurations, best first."""
    rows = [c for c in load(kind)["configs"] if c["learner"] == learner]
    return [dict(c["params"]) for c in sorted(rows, key=lambda c: c.get("rank", 0))]
