"""ingest: read spec.data into the `dataset` artifact (Parquet) and describe what was read."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from aiml024.api.data_steps import IngestResult
from aiml024.api.step_params import IngestParams

from ..data import (
    apply_types,
    dataset_fingerprint,
    duplicate_headers,
    infer_types,
    read_table,
    write_parquet,
)
from . import StepError, parse_params

DATASET_FILE = "dataset"  # the artifact name: the Workflow reads /aiml024/outputs/dataset


def _checked_columns(df: pd.DataFrame, uri: str) -> pd.DataFrame:
    """Column names as unique strings. read_table refuses repeated headers in the file; this
    catches names that only collide as text (Parquet's pandas metadata may restore 1 and "1")."""
    names = [str(c) for c in df.columns]
    repeated = duplicate_headers(names)
    if repeated is not None:
        raise StepError(f"data.uri {uri} has duplicate column headers: {repeated}")
    return df.set_axis(names, axis=1)


def run(params: Mapping[str, Any] | IngestParams, inputs: Path, outputs: Path) -> dict[str, Any]:
    spec = parse_params(IngestParams, params).spec
    if spec.data.sql is not None or spec.data.uri is None:
        raise StepError(
            "data.sql is not supported by the local runtime yet; export the query result to "
            "CSV or Parquet and set data.uri"
        )
    uri = spec.data.uri
    df = _checked_columns(read_table(uri, spec.data.format), uri)
    if len(df) == 0:
        columns = ", ".join(df.columns) or "none"
        raise StepError(f"data.uri {uri} has no rows (columns: {columns})")

    types = infer_types(df, spec)
    df = apply_types(df, types)
    outputs.mkdir(parents=True, exist_ok=True)
    write_parquet(df, outputs / DATASET_FILE)
    return IngestResult(
        uri=uri,
        rows=len(df),
        columns=list(df.columns),
        types=types,
        fingerprint=dataset_fingerprint(df),
    ).wire()
