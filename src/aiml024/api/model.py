"""The Model: one immutable, registered model version and the evidence that gates it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from .common import API_VERSION, ObjectMeta, StatusBase, Strict
from .experiment import LeaderboardEntry

Stage = Literal["none", "staging", "production", "archived"]
Decision = Literal["allow", "deny", "require_approval"]


class ModelSource(Strict):
    """Where the model version came from: an experiment's trial, or an artifact with its digest."""

    experiment: str | None = None
    trial: int | None = None
    workflow: str | None = None
    artifact_uri: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _has_origin(self) -> ModelSource:
        if self.experiment is None and self.artifact_uri is None:
            raise ValueError("set source.experiment or source.artifactUri")
        if self.artifact_uri is not None and self.sha256 is None:
            raise ValueError("source.sha256 is required with source.artifactUri")
        return self


class ModelSpec(Strict):
    source: ModelSource
    task: Literal["classification", "regression"]
    stage: Stage = Field(default="staging", description="The desired stage.")
    owner: str | None = Field(default=None, description="Who authored this version.")
    description: str = ""


class Lineage(Strict):
    dataset_uri: str
    dataset_fingerprint: str
    spec_hash: str
    code_version: str
    experiment: str | None = None
    workflow: str | None = None
    seed: int | None = None


class PolicyDecision(Strict):
    decision: Decision
    violations: list[str] = Field(default_factory=list)
    bundle_digest: str
    stage: Stage
    evaluated_at: datetime
    sha256: str | None = Field(
        default=None, description="The artifact digest the decision was made for."
    )


class Approval(Strict):
    """One approval that counts: who (a verified signer or an authenticated user), for what."""

    user: str
    stage: Stage
    at: datetime
    comment: str = ""
    groups: list[str] = Field(
        default_factory=list, description="The approver's groups (from the approvers registry)."
    )
    key_id: str | None = Field(default=None, description="The signing key, for signed approvals.")
    sha256: str | None = Field(default=None, description="The artifact digest approved.")


class Evidence(Strict):
    """What a risk officer's policy can see besides metrics."""

    model_card_uri: str | None = None
    model_card_complete: bool = False
    pii_columns: list[str] = Field(default_factory=list)
    pii_action: str | None = None
    fairness: dict[str, float] = Field(
        default_factory=dict,
        description="`<attribute>.demographic_parity_difference` and "
        "`<attribute>.equalized_odds_difference` on the holdout, per sensitive attribute.",
    )
    sensitive_attributes: list[str] = Field(
        default_factory=list,
        description="The spec's sensitive attributes: each needs its fairness figures.",
    )
    calibration: dict[str, float] = Field(
        default_factory=dict, description="Holdout `ece` and `brier` (classification)."
    )
    explanation_uri: str | None = Field(
        default=None,
        description="explanations.json: global SHAP, permutation importance, "
        "PDP/ICE of the top features.",
    )
    report_uri: str | None = Field(
        default=None, description="The experiment's self-contained HTML report."
    )
    serving: dict[str, float] = Field(
        default_factory=dict,
        description="The served pipeline's cost as the run measured it: `latencyP95Ms` (one "
        "row) and `sizeMb` (the pickled model).",
    )


class CardSignature(Strict):
    """The model card's Ed25519 signature, over the card's and the bundle's digests."""

    key_fingerprint: str = Field(description="sha256 of the signing key's raw public key.")
    signature_uri: str


class ModelStatus(StatusBase):
    artifact_uri: str | None = None
    sha256: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline_metrics: dict[str, float] = Field(default_factory=dict)
    primary_metric: str | None = None
    evidence: Evidence = Field(default_factory=Evidence)
    leaderboard: list[LeaderboardEntry] = Field(default_factory=list)
    policy: PolicyDecision | None = None
    approvals: list[Approval] = Field(default_factory=list)
    stage: Stage = "none"
    lineage: Lineage | None = None
    card_signature: CardSignature | None = None


class Model(Strict):
    api_version: Literal["aiml024.io/v1alpha1"] = API_VERSION
    kind: Literal["Model"] = "Model"
    metadata: ObjectMeta
    spec: ModelSpec
    status: ModelStatus | None = None
