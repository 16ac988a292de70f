"""The Experiment: intent to train a model from data, and the state of that training."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .common import API_VERSION, ObjectMeta, ResourceRef, StatusBase, Strict

Task = Literal[
    "classification",
    "regression",
    "forecasting",
    "anomaly",
    "text-classification",
    "image-classification",
]
# What the runtime can train today; the CRD keeps the rest so the schema can grow, and
# `aiml024 apply`, the webhook and the compiler refuse them (api.support.UNSUPPORTED).
SUPPORTED_TASKS: tuple[str, ...] = ("classification", "regression")

Objective = Literal[
    "maximize_auc",
    "maximize_f1",
    "maximize_accuracy",
    "minimize_logloss",
    "minimize_rmse",
    "minimize_mae",
    "maximize_r2",
]
CLASSIFICATION_OBJECTIVES: tuple[str, ...] = (
    "maximize_auc",
    "maximize_f1",
    "maximize_accuracy",
    "minimize_logloss",
)
REGRESSION_OBJECTIVES: tuple[str, ...] = ("minimize_rmse", "minimize_mae", "maximize_r2")

Learner = Literal["lightgbm", "xgboost", "random_forest", "extra_trees", "linear", "knn"]
DEFAULT_LEARNERS: list[Learner] = ["lightgbm", "xgboost"]
DatePart = Literal["year", "month", "day", "dayofweek", "hour", "dayofyear"]
DEFAULT_DATE_PARTS: list[DatePart] = ["year", "month", "dayofweek", "dayofyear"]


class SqlSource(Strict):
    """A SQL query against a database whose URL lives in a Secret."""

    url_secret: ResourceRef
    query: str = Field(min_length=1)


class DataSource(Strict):
    uri: str | None = Field(
        default=None,
        min_length=1,
        description="fsspec URI of a CSV or Parquet file: file://, s3://, gs://, memory://, "
        "or a path (relative paths are resolved against the spec's directory locally).",
    )
    format: Literal["auto", "csv", "parquet"] = "auto"
    sql: SqlSource | None = Field(
        default=None,
        description="Not supported yet (refused): a SQL query as the data source; use uri.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.uri is None) == (self.sql is None):
            raise ValueError("set exactly one of data.uri and data.sql")
        return self


class Split(Strict):
    strategy: Literal["stratified-kfold", "kfold", "holdout", "time-series"] = Field(
        default="stratified-kfold",
        description="How search rows are cross-validated; holdout is not supported yet (refused).",
    )
    folds: int = Field(default=5, ge=2, le=20)
    holdout_fraction: float = Field(
        default=0.2, gt=0.0, lt=0.9, description="Share of rows kept out of search for evaluation."
    )


class EarlyStopping(Strict):
    enabled: bool = True
    pruner: Literal["median", "successive-halving", "hyperband", "none"] = "median"
    patience_rounds: int = Field(default=50, ge=1, description="Boosting rounds without gain.")


class Ensemble(Strict):
    enabled: bool = True
    size: int = Field(default=10, ge=1, le=100)


class Search(Strict):
    sampler: Literal["tpe", "random", "cmaes", "nsga2"] = "tpe"
    trials: int = Field(default=50, ge=1, le=100_000)
    time_budget_seconds: int = Field(
        default=300,
        ge=1,
        description=(
            "Wall-clock budget of the whole training, kept by the runtime: the search and the "
            "refit of the chosen model or ensemble in evaluate, process starts included "
            "(data loading and validation excluded). The search stops early enough to leave the "
            "refit its estimated time; evaluate drops ensemble members whose refit would not fit."
        ),
    )
    parallelism: int = Field(default=1, ge=1, le=64)
    learners: list[Learner] = Field(default_factory=lambda: list(DEFAULT_LEARNERS), min_length=1)
    warm_start: bool = True
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    ensemble: Ensemble = Field(default_factory=Ensemble)
    seed: int = 42


class TextFeatures(Strict):
    method: Literal["tfidf", "embeddings"] = Field(
        default="tfidf", description="embeddings is not supported yet (refused)."
    )
    max_features: int = Field(default=500, ge=1)


class Features(Strict):
    text_columns: list[str] = Field(
        default_factory=list, description="Free-text columns; inferred when empty."
    )
    text: TextFeatures = Field(default_factory=TextFeatures)
    datetime_parts: list[DatePart] = Field(default_factory=lambda: list(DEFAULT_DATE_PARTS))
    drop_columns: list[str] = Field(default_factory=list)


class Pii(Strict):
    scan: bool = True
    action: Literal["mask", "drop", "fail"] = Field(
        default="mask", description="What happens to columns found to hold PII before training."
    )


class Constraints(Strict):
    latency_p95_ms: float | None = Field(default=None, gt=0)
    max_model_size_mb: float | None = Field(default=None, gt=0)
    max_cost_per_hour: float | None = Field(
        default=None, gt=0, description="Not supported yet (refused): no cost model."
    )


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(Strict):
    cpu: str = "2"
    memory: str = "4Gi"
    gpu: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Not supported yet (refused unless 0): no learner trains on a GPU.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class Fairness(Strict):
    """Fairness audit: per-group metrics and the disparities the promotion policy judges."""

    sensitive_attributes: list[str] = Field(
        default_factory=list,
        description="Columns whose groups are compared (e.g. an age band or region). They are "
        "left out of the features unless allowAsFeatures.",
    )
    allow_as_features: bool = Field(
        default=False,
        description="Also train on the sensitive attributes.",
    )


class Explain(Strict):
    """What the explanations cover."""

    immutable_features: list[str] = Field(
        default_factory=list,
        description="Columns a counterfactual keeps fixed (e.g. age): only the others may change.",
    )
    top_features: int = Field(
        default=5,
        ge=1,
        le=20,
        description="How many of the most important features get PDP/ICE.",
    )


class CostMatrix(Strict):
    """Binary classification: the cost of each kind of error; the decision threshold minimizes
    the expected cost on out-of-fold predictions."""

    false_positive: float = Field(ge=0)
    false_negative: float = Field(ge=0)


class Expectation(Strict):
    """One data expectation the validate step checks; a violation fails the run."""

    column: str = Field(min_length=1)
    dtype: Literal["numeric", "string", "boolean", "datetime"] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = True
    unique: bool = False
    allowed_values: list[str] | None = Field(
        default=None,
        description="The values a column may hold, written as text: numbers and booleans "
        "compare by their text ('1' matches 1 and 1.0, 'true' matches true).",
    )

    @field_validator("allowed_values", mode="before")
    @classmethod
    def _as_text(cls, values: Any) -> Any:
        """YAML reads `[1, yes]` as a number and a boolean: keep them, as their text."""
        if not isinstance(values, list):
            return values
        return [
            ("true" if v else "false") if isinstance(v, bool)
            else str(v) if isinstance(v, int | float) else v
            for v in values
        ]  # fmt: skip


class ModelTarget(Strict):
    name: str = Field(min_length=1, max_length=63, description="Name of the Model to register.")
    labels: dict[str, str] = Field(default_factory=dict)


class ExperimentSpec(Strict):
    task: Task = Field(
        description=(
            "classification or regression; forecasting, anomaly, text-classification and "
            "image-classification are not supported yet (refused)."
        )
    )
    data: DataSource
    target: str = Field(min_length=1)
    id_column: str | None = None
    time_column: str | None = None
    objective: Objective | None = Field(
        default=None, description="Defaults to maximize_auc or minimize_rmse by task."
    )
    split: Split = Field(default_factory=Split)
    search: Search = Field(default_factory=Search)
    features: Features = Field(default_factory=Features)
    pii: Pii = Field(default_factory=Pii)
    constraints: Constraints = Field(default_factory=Constraints)
    resources: Resources = Field(default_factory=Resources)
    model: ModelTarget | None = None
    fairness: Fairness = Field(default_factory=Fairness)
    explain: Explain = Field(default_factory=Explain)
    cost_matrix: CostMatrix | None = Field(
        default=None,
        description="Binary classification: pick the decision threshold that minimizes the "
        "expected cost.",
    )
    expectations: list[Expectation] = Field(
        default_factory=list,
        description="Data expectations the validate step checks.",
    )

    @model_validator(mode="after")
    def _cost_matrix_fits_task(self) -> ExperimentSpec:
        if self.cost_matrix is not None and self.task != "classification":
            raise ValueError(
                f"costMatrix applies to binary classification, not {self.task}; remove it"
            )
        return self

    @model_validator(mode="after")
    def _objective_fits_task(self) -> ExperimentSpec:
        if self.objective is None:
            return self
        if self.task == "classification" and self.objective not in CLASSIFICATION_OBJECTIVES:
            raise ValueError(
                f"objective {self.objective} does not apply to classification; "
                f"use one of {', '.join(CLASSIFICATION_OBJECTIVES)}"
            )
        if self.task == "regression" and self.objective not in REGRESSION_OBJECTIVES:
            raise ValueError(
                f"objective {self.objective} does not apply to regression; "
                f"use one of {', '.join(REGRESSION_OBJECTIVES)}"
            )
        return self

    @property
    def effective_objective(self) -> str:
        if self.objective:
            return self.objective
        return "minimize_rmse" if self.task == "regression" else "maximize_auc"


class Trial(Strict):
    number: int
    learner: str
    value: float
    params: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class LeaderboardEntry(Strict):
    rank: int
    name: str = Field(description="Learner name, or 'ensemble'.")
    value: float
    members: list[str] = Field(default_factory=list)
    trial: int | None = None


class ExperimentStatus(StatusBase):
    workflow_name: str | None = None
    trials_total: int | None = None
    trials_completed: int = 0
    metric: str | None = None
    best_value: float | None = None
    best_trial: Trial | None = None
    leaderboard: list[LeaderboardEntry] = Field(default_factory=list)
    model_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None


ExperimentPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class Experiment(Strict):
    api_version: Literal["aiml024.io/v1alpha1"] = API_VERSION
    kind: Literal["Experiment"] = "Experiment"
    metadata: ObjectMeta
    spec: ExperimentSpec
    status: ExperimentStatus | None = None
