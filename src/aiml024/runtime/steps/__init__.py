"""Workflow steps: each module exposes `run(params, inputs, outputs) -> dict` (its result.json).

Step modules are imported by name on demand (`aiml024.runtime.steps.<step>`), so importing this
package stays cheap and pulls in no ML library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aiml024.api import ExperimentSpec, describe_validation_error
from aiml024.api.steps import run_root


class StepError(ValueError):
    """Bad input data or parameters: the dispatcher prints `error: <message>` and exits 2.

    The message says what is wrong and where (column, file, URI), for the person who wrote
    the Experiment, not for the developer.
    """


def spec_from(params: dict[str, Any]) -> ExperimentSpec:
    """The Experiment spec carried in a step's params, or a StepError naming the bad fields."""
    if "spec" not in params:
        raise StepError("params carry no 'spec': the workflow must pass the Experiment spec")
    try:
        return ExperimentSpec.model_validate(params["spec"])
    except ValidationError as error:
        raise StepError("invalid spec: " + "; ".join(describe_validation_error(error))) from None


_IDENTITY = ("namespace", "experiment", "experimentUid", "workflow")


def _run_identity(params: dict[str, Any]) -> tuple[str, str, str, str]:
    missing = [key for key in _IDENTITY if not params.get(key)]
    if missing:
        raise StepError(
            f"params carry no {', '.join(repr(k) for k in missing)}: the run's identity "
            "(namespace, experiment, its uid, workflow) names its artifacts and study"
        )
    namespace, experiment, uid, workflow = (str(params[key]) for key in _IDENTITY)
    return namespace, experiment, uid, workflow


def run_root_from(params: dict[str, Any]) -> str:
    """This run's own artifact location (aiml024.api.steps.run_root), from the step's params."""
    identity = _run_identity(params)
    store = str(params.get("artifactStore") or "")
    if not store:
        raise StepError("params carry no 'artifactStore': where do this run's artifacts go?")
    if "://" not in store:  # a bare path becomes absolute, so servers elsewhere can find it
        store = str(Path(store).resolve())
    try:
        return run_root(store, *identity)
    except ValueError as error:
        raise StepError(str(error)) from None


def study_name(params: dict[str, Any]) -> str:
    """The Optuna study of this run: unique per namespace, Experiment uid and workflow."""
    return ".".join(_run_identity(params))


__all__ = ["StepError", "run_root_from", "spec_from", "study_name"]
