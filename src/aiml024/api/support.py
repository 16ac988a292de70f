"""No hollow fields: what the api accepts but the platform does not do yet.

The CRDs keep these fields, so the schema can grow without a new version; a user who sets one
is refused, with `not supported yet: <path> (<why>)`, by `aiml024 apply` (parse_object), by
the admission webhook and by the compiler, instead of being silently ignored. A later release
that implements a field removes its entry here (tests/unit/test_hollow_fields.py then asks for
the test that exercises it).

Keys are wire paths (camelCase, `[]` for each item of a list) per kind. A bare path is refused
when the object sets it to anything but its default (a field left at its default is fine); a
`path=value` key refuses that one value of an enum (or that item of a list of enums).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .deployment import Deployment
from .experiment import Experiment
from .model import Model

# kind -> refused path (or path=value) -> why, and what to do instead.
UNSUPPORTED: dict[str, dict[str, str]] = {
    "Experiment": {
        "spec.task=forecasting": "the runtime trains classification and regression",
        "spec.task=anomaly": "the runtime trains classification and regression",
        "spec.task=text-classification": (
            "the runtime trains classification and regression; use task classification with "
            "features.textColumns"
        ),
        "spec.task=image-classification": "the runtime trains classification and regression",
        "spec.data.sql": (
            "no step reads a SQL source; export the query result to CSV or Parquet and set data.uri"
        ),
        "spec.split.strategy=holdout": (
            "the search always cross-validates: holdout would run stratified-kfold; use "
            "stratified-kfold, kfold or time-series"
        ),
        "spec.features.text.method=embeddings": "text columns are featurized with tfidf only",
        "spec.constraints.maxCostPerHour": (
            "no cost model: only latencyP95Ms and maxModelSizeMb constrain the chosen model"
        ),
        "spec.resources.gpu": (
            "no learner trains on a GPU: the search would hold a GPU it never uses; remove it"
        ),
    },
    "Model": {},
    "Deployment": {
        "spec.monitors[].type=performance": (
            "no performance monitor is compiled; drift monitors are (type drift)"
        ),
    },
}


def _field(model: type[BaseModel], wire: str) -> tuple[str, FieldInfo]:
    for name, info in model.model_fields.items():
        if (info.alias or name) == wire:
            return name, info
    raise KeyError(f"{model.__name__} has no field {wire!r}")


def _values(node: Any, parts: list[str], where: str) -> Iterator[tuple[str, Any, Any]]:
    """(concrete path, value, default) of every place the wire path `parts` names in `node`."""
    head, rest = parts[0], parts[1:]
    many = head.endswith("[]")
    wire = head.removesuffix("[]")
    name, info = _field(type(node), wire)
    value = getattr(node, name)
    here = f"{where}.{wire}" if where else wire
    if many:
        for index, item in enumerate(value or []):
            yield from _values(item, rest, f"{here}[{index}]")
    elif not rest:
        yield here, value, info.get_default(call_default_factory=True)
    elif value is not None:
        yield from _values(value, rest, here)


def _problems(obj: Experiment | Model | Deployment) -> Iterator[str]:
    for key, why in UNSUPPORTED[obj.kind].items():
        path, _, refused = key.partition("=")
        for where, value, default in _values(obj, path.split("."), ""):
            if refused:
                items = value if isinstance(value, list) else [value]
                if refused in items:
                    yield f"not supported yet: {where}={refused} ({why})"
            elif value is not None and value != default:
                yield f"not supported yet: {where} ({why})"


def unsupported(
    obj: Experiment | Model | Deployment, before: Experiment | Model | Deployment | None = None
) -> list[str]:
    """One `not supported yet: <path> (<why>)` per refused field `obj` sets; empty if none.

    With `before` (the stored object an update replaces), only what `before` did not already
    hold is refused, as the API server ratchets CRD rules: an object stored before a field was
    refused can still have its metadata patched, and be deleted or fixed.
    """
    problems = list(dict.fromkeys(_problems(obj)))
    if before is not None:
        held = set(_problems(before))
        problems = [p for p in problems if p not in held]
    return problems


__all__ = ["UNSUPPORTED", "unsupported"]
