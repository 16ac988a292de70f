"""Workflow steps: each module exposes `run(params, inputs, outputs) -> dict` (its result.json).

`params` is the step's typed model (aiml024.api.step_params.PARAMS[step]) or the `--params`
document it is parsed from (`parse_params`: a missing, renamed or mistyped key is a StepError
that names it). Each step writes its result through its result model (api.step_params.RESULTS)
and reads the earlier steps' results only through theirs.

Step modules are imported by name on demand (`aiml024.runtime.steps.<step>`), so importing this
package stays cheap and pulls in no ML library.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from aiml024.api.step_params import PARAMS, StepName, StepParams
from aiml024.api.steps import run_root

from ..errors import StepError

P = TypeVar("P", bound=StepParams)


def parse_params(model: type[P], params: Mapping[str, Any] | P) -> P:
    """The step's params as `model`, or a StepError naming every missing, unknown or mistyped
    key (`invalid params: 'validate.piiAction' is missing`); problems inside the spec read
    `invalid spec: ...`. An earlier step's result must hold every field its producer writes
    (api.step_params.StepParams.unwritten_fields): no default stands in for a lost field."""
    if isinstance(params, model):
        return params
    if not isinstance(params, Mapping):
        raise StepError(f"params must be a JSON object, not {type(params).__name__}")
    document = dict(params)
    keys = [f"{path!r} is missing" for path in model.unwritten_fields(document)]
    spec: list[str] = []
    try:
        typed = model.model_validate(document)
    except ValidationError as error:
        _describe(error, keys, spec)
    parts = [f"invalid params: {'; '.join(keys)}"] if keys else []
    parts += [f"invalid spec: {'; '.join(spec)}"] if spec else []
    if parts:
        raise StepError("; ".join(parts))
    return typed


def params_for(step: StepName, params: Mapping[str, Any] | StepParams) -> StepParams:
    """`parse_params` with the model of `step` (the dispatcher's entry)."""
    return parse_params(PARAMS[step], params)


def _describe(error: ValidationError, keys: list[str], spec: list[str]) -> None:
    """Each problem as `'validate.piiAction' is missing` (into `keys`) or, inside the spec,
    `spec.search.trials: ...` (into `spec`, as `aiml024 apply` words them)."""
    for item in error.errors():
        # Drop pydantic's internal markers (the member of a union, a validator's tag).
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        where = _path(loc)
        message = item["msg"].removeprefix("Value error, ")
        kind = item["type"]
        if loc[:1] == ("spec",) and (len(loc) > 1 or kind != "missing"):
            spec.append(f"{where}: {'unknown field' if kind == 'extra_forbidden' else message}")
        elif kind == "missing":
            keys.append(f"{where!r} is missing")
        elif kind == "extra_forbidden":
            keys.append(f"{where!r} is not a known key (renamed?)")
        else:
            keys.append(f"{where!r}: {message}")


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(params)"


_IDENTITY = ("namespace", "experiment", "experiment_uid", "workflow")


def _run_identity(params: StepParams) -> tuple[str, str, str, str]:
    values = {key: str(getattr(params, key)) for key in _IDENTITY}
    missing = [StepParams.model_fields[key].alias or key for key in _IDENTITY if not values[key]]
    if missing:
        raise StepError(
            f"params carry no {', '.join(repr(k) for k in missing)}: the run's identity "
            "(namespace, experiment, its uid, workflow) names its artifacts and study"
        )
    namespace, experiment, uid, workflow = (values[key] for key in _IDENTITY)
    return namespace, experiment, uid, workflow


def run_root_from(params: StepParams) -> str:
    """This run's own artifact location (aiml024.api.steps.run_root), from the step's params."""
    identity = _run_identity(params)
    store = params.artifact_store
    if not store:
        raise StepError("params carry no 'artifactStore': where do this run's artifacts go?")
    if "://" not in store:  # a bare path becomes absolute, so servers elsewhere can find it
        store = str(Path(store).resolve())
    try:
        return run_root(store, *identity)
    except ValueError as error:
        raise StepError(str(error)) from None


def study_name(params: StepParams) -> str:
    """The Optuna study of this run: unique per namespace, Experiment uid and workflow."""
    return ".".join(_run_identity(params))


__all__ = ["StepError", "params_for", "parse_params", "run_root_from", "study_name"]
