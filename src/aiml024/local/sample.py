"""One real prediction from a served Deployment, on a row of the model's own training data."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .store import Store


def sample_rows(store: Store, deployment: str, count: int = 1) -> list[dict[str, Any]]:
    """The last rows of the stable model's dataset, without the target, as a client sends them."""
    from ..runtime.data import read_table

    dep = store.get("Deployment", deployment)
    model = store.get("Model", dep["spec"]["model"])
    lineage = (model.get("status") or {}).get("lineage") or {}
    experiment = store.get("Experiment", model["spec"]["source"]["experiment"])
    frame = read_table(lineage["datasetUri"], experiment["spec"]["data"].get("format", "auto"))
    rows = frame.drop(columns=[experiment["spec"]["target"]]).tail(count)
    records: list[dict[str, Any]] = json.loads(rows.to_json(orient="records", date_format="iso"))
    return records


def sample_prediction(
    store: Store, deployment: str, endpoint: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    request = {"instances": sample_rows(store, deployment)}
    response = httpx.post(f"{endpoint}/v1/inference/{deployment}:predict", json=request, timeout=30)
    response.raise_for_status()
    return request, response.json()
