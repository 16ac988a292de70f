"""The files steps hand each other: their names, and reading and writing them.

Artifact names are the Workflow's (`/aiml024/inputs/<name>`, `/aiml024/outputs/<name>`); the
search artifact is a directory that evaluate reads back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from aiml024.api import describe_validation_error

from .errors import StepError

M = TypeVar("M", bound=BaseModel)

CLEAN = "clean"  # validate -> search, evaluate: the clean table (Parquet)
SEARCH = "search"  # search -> evaluate: the directory below
SPLIT_FILE = "split.json"  # the holdout and fold rows (splits.split_document)
LEADERBOARD_FILE = "leaderboard.json"  # api.steps.Leaderboard: ranked candidates, budget left
REPORT_FILE = "report.html"  # evaluate's card/: the experiment's self-contained report
EXPLANATIONS_FILE = "explanations.json"  # evaluate's card/: SHAP, importance, PDP/ICE, examples
STUDY_JOURNAL = "study.journal"  # search/: the Optuna study, unless params.studyStorage names one
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


def read_model(path: Path, model: type[M], producer: str) -> M:
    """A JSON artifact as its typed `model`; a missing or mistyped field is a StepError naming
    the file and the field (a renamed field fails here, never falls into a default)."""
    try:
        return model.model_validate(read_json(path, producer))
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise StepError(
            f"input artifact {path} is not a valid {model.__name__}: {problems}"
        ) from None


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def path_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory: (relative name, content digest) of every
    file, in name order (a bundle's digest, aiml024.runtime.bundle.bundle_digest)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(item.read_bytes()).digest())
    return digest.hexdigest()


def write_once(uri: str, content: bytes) -> None:
    """Write `content` to `uri` unless it exists; existing different content is an error."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        if fs.cat_file(path) != content:
            raise StepError(f"{uri} already exists with other content; it is never replaced")
        return
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, content)
