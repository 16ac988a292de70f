"""The files steps hand each other: their names, and reading and writing them.

Artifact names are the Workflow's (`/aiml024/inputs/<name>`, `/aiml024/outputs/<name>`); the
search artifact is a directory that evaluate reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import StepError

CLEAN = "clean"  # validate -> search, evaluate: the clean table (Parquet)
SEARCH = "search"  # search -> evaluate: the directory below
SPLIT_FILE = "split.json"  # the holdout and fold rows (splits.split_document)
LEADERBOARD_FILE = "leaderboard.json"  # the ranked candidates and what is left of the budget
OOF_DIR = "oof"  # trial-<n>.npy: out-of-fold predictions of the leaderboard's trials


def oof_file(number: int) -> str:
    return f"trial-{number}.npy"


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet artifact: the file itself, or the first *.parquet file of a directory."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise StepError(f"input artifact {path} holds no parquet file")
        path = files[0]
    if not path.exists():
        raise StepError(f"input artifact {path} is missing")
    return pd.read_parquet(path)


def read_json(path: Path, producer: str) -> Any:
    """A JSON file of an input artifact; missing: the `producer` step has not run."""
    if not path.exists():
        raise StepError(f"input artifact {path} is missing: run the {producer} step first")
    return json.loads(path.read_text())


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
