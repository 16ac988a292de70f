"""Workflow steps: each module exposes `run(params, inputs, outputs) -> dict` (its result.json).

Step modules are imported by name on demand (`aiml024.runtime.steps.<step>`), so importing this
package stays cheap and pulls in no ML library.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aiml024.api import ExperimentSpec, describe_validation_error


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


__all__ = ["StepError", "spec_from"]
