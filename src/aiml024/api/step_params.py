"""What each workflow step reads: its `--params` document, one model per step.

`python -m aiml024.runtime STEP --params JSON` parses the document with `PARAMS[STEP]` and
refuses a missing, renamed or mistyped key by name (exit 2); the compiler builds the document
from the same model (aiml024.compiler.workflow: every field of the model becomes an Argo
expression, so a field without one fails the compile). Wire names are camelCase; unknown keys
are refused, so a result field renamed by its producer fails in its consumer instead of falling
into a default.

Every step gets the run's identity (`experiment`, `namespace`, `experimentUid`, `workflow`:
they name the run root, api.steps.run_root, and the Optuna study), where it stores things
(`artifactStore`, `studyStorage`), `codeVersion` and the Experiment `spec`; and the results of
the steps before it, under keys named after the step, each as the model it was written with.
A result is read as strictly as it is written: a field its producer always writes (`wire()`
leaves out only None) is required on reading even where the model has a default for the
producer (`StepParams.unwritten_fields`), so a field the producer dropped is refused too.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, model_validator

from .common import Strict
from .data_steps import IngestResult, ValidateResult
from .experiment import ExperimentSpec
from .steps import EvaluateResult, RegisterResult, SearchResult, SearchWorkerResult

StepName = Literal["ingest", "validate", "search", "evaluate", "register"]
# The one list of the steps, in the order they run; the compiler's DAG and the runtime's
# dispatcher both read it.
STEPS: tuple[StepName, ...] = ("ingest", "validate", "search", "evaluate", "register")
# step -> (input artifacts, output artifacts): the files one step hands the next (the compiler
# wires them; each step's receipt records the outputs' digests, which its consumers check).
ARTIFACTS: dict[StepName, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": ((), ("dataset",)),
    "validate": (("dataset",), ("clean", "report")),
    "search": (("clean",), ("search",)),
    "evaluate": (("clean", "search"), ("bundle", "card")),
    "register": (("bundle", "card"), ()),
}


def producer(artifact: str) -> StepName:
    """The step whose output `artifact` is."""
    return next(step for step, (_, outputs) in ARTIFACTS.items() if artifact in outputs)


class StepParams(Strict):
    """What every step reads: the run's identity, its stores, the code version and the spec."""

    experiment: str = Field(description="The Experiment's name.")
    namespace: str = Field(description="The Experiment's namespace.")
    experiment_uid: str = Field(
        description="The Experiment's metadata.uid; empty when compiled before the API server "
        "stored it (the steps that need the run root or the study then refuse to run)."
    )
    workflow: str = Field(description="The Workflow's name: `<experiment>-g<generation>`.")
    artifact_store: str = Field(
        description="fsspec URI root of the run roots (api.steps.run_root)."
    )
    study_storage: str = Field(
        description="Optuna storage URL; empty: a journal file (the search step's outputs, or "
        "the shared search directory for distributed search)."
    )
    code_version: str = Field(description="The aiml024 version that runs the steps.")
    spec: ExperimentSpec

    @classmethod
    def unwritten_fields(cls, document: Any) -> list[str]:
        """Paths (`validate.piiAction`) of the earlier results' fields that their producer
        always writes and `document` lacks: fields with a default other than None, which
        `model_validate` would fill in silently. Missing required fields are validation's."""
        if not isinstance(document, dict):
            return []
        missing: list[str] = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in STEPS and isinstance(field.annotation, type):
                missing += _unwritten(field.annotation, document.get(key), key)
        return missing


class IngestParams(StepParams):
    pass


class ValidateParams(StepParams):
    ingest_result: IngestResult = Field(alias="ingest")


class SearchParams(StepParams):
    """The search step; distributed search (spec.search.parallelism > 1) runs it as N workers
    (`worker`: the index) on one shared study, then once more as the merge (`merge: true`)."""

    ingest_result: IngestResult = Field(alias="ingest")
    validate_result: ValidateResult = Field(alias="validate")
    worker: int | None = Field(
        default=None, ge=0, description="This worker's index: run its share of the trials."
    )
    merge: bool = Field(
        default=False, description="Rebuild the leaderboard and ensemble from every worker."
    )
    search_shared: str | None = Field(
        default=None,
        description="Where workers put what the merge reads (fsspec); default "
        "`<run root>/search`. The compiler never sets it: an override for tests and operators.",
    )

    @model_validator(mode="after")
    def _one_role(self) -> SearchParams:
        if self.worker is not None and self.merge:
            raise ValueError("a search step is a worker or the merge, not both")
        return self


class EvaluateParams(StepParams):
    ingest_result: IngestResult = Field(alias="ingest")
    validate_result: ValidateResult = Field(alias="validate")
    search_result: SearchResult = Field(alias="search")


class RegisterParams(StepParams):
    ingest_result: IngestResult = Field(alias="ingest")
    validate_result: ValidateResult = Field(alias="validate")
    search_result: SearchResult = Field(alias="search")
    evaluate_result: EvaluateResult = Field(alias="evaluate")


PARAMS: dict[StepName, type[StepParams]] = {
    "ingest": IngestParams,
    "validate": ValidateParams,
    "search": SearchParams,
    "evaluate": EvaluateParams,
    "register": RegisterParams,
}
# What each step writes as result.json (a search worker writes a SearchWorkerResult instead).
RESULTS: dict[StepName, type[Strict]] = {
    "ingest": IngestResult,
    "validate": ValidateResult,
    "search": SearchResult,
    "evaluate": EvaluateResult,
    "register": RegisterResult,
}
WORKER_RESULT = SearchWorkerResult


def _unwritten(model: type[Any], document: Any, where: str) -> list[str]:
    if not (issubclass(model, BaseModel) and isinstance(document, dict)):
        return []
    missing: list[str] = []
    for name, field in model.model_fields.items():
        key, path = field.alias or name, f"{where}.{field.alias or name}"
        if key not in document:
            written = field.get_default(call_default_factory=True) is not None
            if not field.is_required() and written:
                missing.append(path)
            continue
        value = document[key]
        for inner in _models_in(field.annotation):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    missing += _unwritten(inner, item, f"{path}[{i}]")
            else:
                missing += _unwritten(inner, value, path)
    return missing


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds: itself, a list's items, a union's members."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (list, Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def earlier_steps(step: StepName) -> tuple[StepName, ...]:
    """The steps that run before `step`: their results are part of its params."""
    return STEPS[: STEPS.index(step)]


__all__ = [
    "ARTIFACTS",
    "PARAMS",
    "RESULTS",
    "STEPS",
    "WORKER_RESULT",
    "EvaluateParams",
    "IngestParams",
    "RegisterParams",
    "SearchParams",
    "StepName",
    "StepParams",
    "ValidateParams",
    "earlier_steps",
    "producer",
]
