"""What a drift monitor run produces, and where the serving side and the monitors keep their
files in the artifact store (the same layout locally, file://, and in a cluster, s3://).

Under `monitor_root(store, namespace, deployment)`:
    requests/part-*.jsonl   the request log the model servers write (aiml024.runtime.requestlog)
    feedback/part-*.jsonl   outcomes clients report for logged requests (A/B tests)
    drift/latest.json       the newest DriftReport of any monitor (the servers export it as
                            the aiml024_drift_score metric)
    drift/<monitor>/<yyyymmddThhmmssZ>.json   every DriftReport, written once

Only the platform writes there (the servers, the monitor step, the control planes); namespace
users have no store access, so the operator may trust what it reads back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import Strict

SERVING_DIR = "_serving"
REQUESTS = "requests"
FEEDBACK = "feedback"
DRIFT = "drift"
LATEST_DRIFT = "latest.json"
PREDICTION = "prediction"  # the feature name of the predictions' own drift


def monitor_root(store: str, namespace: str, deployment: str) -> str:
    """`{store}/{namespace}/_serving/{deployment}`: every file a Deployment's serving and
    monitoring writes. One function, so servers, monitors and control planes agree."""
    return f"{store.rstrip('/')}/{namespace}/{SERVING_DIR}/{deployment}"


class FeatureDrift(Strict):
    feature: str  # an input column, or `prediction`
    kind: Literal["numeric", "categorical", "prediction"]
    statistic: Literal["psi", "ks", "chi2"]
    score: float  # compared with the monitor's threshold
    p_value: float | None = None
    drifted: bool = False


class DriftReport(Strict):
    """One monitor run over the requests logged in [since, until)."""

    deployment: str
    namespace: str
    monitor: str
    model: str  # the Model whose reference profile was compared (the stable one)
    sha256: str
    method: Literal["psi", "ks", "chi2"]
    threshold: float
    since: datetime | None = None
    until: datetime
    rows: int = Field(description="Logged rows compared.")
    reference_rows: int = 0
    features: list[FeatureDrift] = Field(default_factory=list)
    score: float | None = Field(
        default=None, description="The largest score; None when there were too few rows."
    )
    drifted: bool = False
    message: str = ""
