"""aiml024.io/v1alpha1: the single source of truth for the objects users commit."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .common import API_VERSION, GROUP, VERSION, Condition, ObjectMeta, set_condition
from .deployment import Deployment, DeploymentSpec, DeploymentStatus
from .experiment import Experiment, ExperimentSpec, ExperimentStatus
from .model import Model, ModelSpec, ModelStatus
from .support import UNSUPPORTED, unsupported

AnyObject = Experiment | Model | Deployment

KINDS: dict[str, type[Experiment] | type[Model] | type[Deployment]] = {
    "Experiment": Experiment,
    "Model": Model,
    "Deployment": Deployment,
}
# kind -> (plural, singular, short names), as `kubectl get` accepts them.
NAMES: dict[str, tuple[str, str, list[str]]] = {
    "Experiment": ("experiments", "experiment", ["exp"]),
    "Model": ("models", "model", ["mdl"]),
    "Deployment": ("deployments", "deployment", ["mdep"]),
}


class SpecError(ValueError):
    """A manifest that is not a valid aiml024 object; the message names every bad field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(
            "\n".join(p if p.startswith(source) else f"{source}: {p}" for p in problems)
        )


def _where(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def describe_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        # Drop pydantic's internal markers (e.g. the tag of a function validator).
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{_where(loc)}: {message}")
    return problems


def kind_for(name: str) -> str:
    """Resolve a kind the way kubectl does: Kind, plural, singular or short name."""
    lowered = name.lower()
    for kind, (plural, singular, short) in NAMES.items():
        if lowered in (kind.lower(), plural, singular, *short):
            return kind
    raise SpecError(name, [f"unknown kind {name!r}; use experiments, models or deployments"])


def parse_object(document: Any, source: str = "<input>") -> AnyObject:
    """Validate one manifest into its api model, or raise SpecError naming every problem.

    A field the platform does not implement yet is a problem too, one `not supported yet:
    <path> (<why>)` each (see api.support): a manifest never sets a field that does nothing."""
    if not isinstance(document, dict):
        raise SpecError(source, ["a manifest must be a mapping with apiVersion, kind, metadata"])
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise SpecError(source, [f"apiVersion: expected {API_VERSION}, got {api_version!r}"])
    kind = document.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise SpecError(source, [f"kind: expected one of {', '.join(KINDS)}, got {kind!r}"])
    try:
        obj = model.model_validate(document)
    except ValidationError as error:
        raise SpecError(source, describe_validation_error(error)) from None
    problems = unsupported(obj)
    if problems:
        raise SpecError(source, problems)
    return obj


__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "KINDS",
    "NAMES",
    "AnyObject",
    "Condition",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "Experiment",
    "ExperimentSpec",
    "ExperimentStatus",
    "Model",
    "ModelSpec",
    "ModelStatus",
    "ObjectMeta",
    "SpecError",
    "UNSUPPORTED",
    "describe_validation_error",
    "kind_for",
    "parse_object",
    "set_condition",
    "unsupported",
]
