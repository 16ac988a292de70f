"""Results of the search, evaluate and register steps (their result.json, camelCase).

The ingest and validate results are in api.data_steps; what each step reads (its params, which
carry the earlier steps' results as these models) is in api.step_params."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .common import Strict
from .experiment import LeaderboardEntry, Trial

ParamValue = float | int | str | bool | None


class LeaderboardRow(Strict):
    """One ranked candidate: a trial, or the ensemble (learner 'ensemble', with members)."""

    rank: int
    name: str = Field(description="Learner name, or 'ensemble'.")
    learner: str
    value: float
    trial: int | None = None
    params: dict[str, ParamValue] = Field(default_factory=dict)
    best_iteration: int | None = Field(
        default=None, description="Mean boosting rounds kept by early stopping across folds."
    )
    members: list[str] = Field(default_factory=list, description="'<learner>#<trial>' each.")
    weights: list[float] = Field(default_factory=list)

    def entry(self) -> LeaderboardEntry:
        """The short form an Experiment or Model status shows."""
        return LeaderboardEntry(
            rank=self.rank, name=self.name, value=self.value, members=self.members, trial=self.trial
        )


class RefitBudget(Strict):
    """What evaluate may still spend of timeBudgetSeconds (counted from its own start), and
    each leaderboard trial's estimated refit seconds, by trial number."""

    time_budget_seconds: float
    search_seconds: float
    remaining_seconds: float
    refit_seconds: dict[str, float] = Field(default_factory=dict)


class Leaderboard(Strict):
    """search/leaderboard.json: the ranked candidates search hands to evaluate."""

    metric: str = Field(description="The objective, e.g. maximize_auc.")
    classes: list[Any] = Field(default_factory=list)
    rows: list[LeaderboardRow]
    budget: RefitBudget | None = None


class SearchResult(Strict):
    trials_completed: int
    trials_pruned: int = 0
    trials_total: int
    metric: str = Field(description="The objective, e.g. maximize_auc.")
    best_value: float
    best_trial: Trial
    leaderboard: list[LeaderboardRow]
    elapsed_seconds: float
    train_rows: int
    holdout_rows: int


class SearchWorkerResult(Strict):
    """What one distributed-search worker did (its result.json; no artifact: its trials are in
    the shared study and their out-of-fold predictions in the shared search directory)."""

    worker: int = Field(ge=0)
    workers: int = Field(ge=1)
    quota: int = Field(ge=0, description="This worker's share of spec.search.trials.")
    trials: list[int] = Field(description="Numbers of the trials this worker finished.")
    trials_completed: int
    trials_pruned: int
    trials_failed: int
    elapsed_seconds: float


class EvaluateResult(Strict):
    metrics: dict[str, float] = Field(description="Holdout metrics of the chosen model.")
    baseline_metrics: dict[str, float] = Field(
        description="Holdout metrics of a default LightGBM on the same features and rows."
    )
    primary_metric: str
    sha256: str
    learner: str = Field(description="The chosen learner, or 'ensemble'.")
    members: list[str] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    calibration: dict[str, float] = Field(default_factory=dict)
    fairness: dict[str, float] = Field(
        default_factory=dict, description="api.model.Evidence.fairness, measured on the holdout."
    )
    sensitive_attributes: list[str] = Field(default_factory=list)
    serving: dict[str, float] = Field(
        default_factory=dict, description="The chosen pipeline's latencyP95Ms and sizeMb."
    )
    card_complete: bool
    threshold: float = 0.5
    trial: int | None = Field(default=None, description="The best single trial's number.")
    holdout_rows: int


REGISTRATION = "registration.json"


def run_root(store: str, namespace: str, experiment: str, uid: str, workflow: str) -> str:
    """Where one run's artifacts live: `{store}/{namespace}/{experiment}/{uid}/{workflow}`.

    The namespace and the Experiment's uid keep two namespaces, and an Experiment deleted and
    re-created under the same name, from ever sharing a path. The register step writes the
    run's `registration.json` here (write-once); the control planes read it back from here,
    never from the Workflow's status, which namespace editors can write.
    """
    for what, value in (("namespace", namespace), ("experiment", experiment), ("uid", uid),
                        ("workflow", workflow)):  # fmt: skip
        if not value or "/" in value or value in (".", ".."):
            raise ValueError(f"the run's {what} {value!r} cannot be part of an artifact path")
    return f"{store.rstrip('/')}/{namespace}/{experiment}/{uid}/{workflow}"


RECEIPTS = "steps"  # under the run root: one receipt per step, <step>.json


class StepReceipt(Strict):
    """What one step produced, written by the step itself under the run root, once: its result
    and the sha256 of each output artifact. A consumer compares what reached it through the
    Workflow (parameters, artifacts: status that namespace editors can write) with this."""

    step: str
    result: dict[str, Any]
    artifacts: dict[str, str] = Field(
        default_factory=dict,
        description="Output artifact name -> sha256 (a directory's: of "
        "its files' names and contents, in name order).",
    )


class RegisterResult(Strict):
    model: dict[str, Any] = Field(description="The Model manifest to create (wire JSON).")
    artifact_uri: str
    model_card_uri: str
