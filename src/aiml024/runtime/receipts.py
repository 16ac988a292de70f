"""Step receipts: each step's own record of what it produced, under the run root.

Argo hands a step the earlier steps' results (parameters) and artifacts from the Workflow's
status, which namespace editors can write (the Workflow CRD has no status subresource, and
WorkflowTaskResults are editable too). So a step never trusts what reached it that way alone:
each step writes, once, `{run root}/steps/<step>.json` (api.steps.StepReceipt: its result and
the sha256 of each output artifact), and each step compares every earlier result in its params
and every input artifact with those receipts before it runs. Only the runtime's identity
writes under a run root (docs/CLUSTER.md, "Security model"); a forged result or artifact
fails the run, naming what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from aiml024.api import describe_validation_error
from aiml024.api.step_params import ARTIFACTS, StepName, earlier_steps, producer
from aiml024.api.steps import RECEIPTS, StepReceipt

from .artifacts import path_digest, write_once
from .errors import StepError

RESULT_FILE = "result.json"


def receipt_uri(run_root: str, name: str) -> str:
    return f"{run_root}/{RECEIPTS}/{name}.json"


def output_digests(step: StepName, outputs: Path) -> dict[str, str]:
    """sha256 of each output artifact the step declares (api.step_params.ARTIFACTS)."""
    return {
        name: path_digest(outputs / name)
        for name in ARTIFACTS[step][1]
        if (outputs / name).exists()
    }


def write_receipt(
    run_root: str, name: str, step: StepName, result: dict[str, Any], outputs: Path
) -> None:
    """Record, once, what this step produced (`name`: the step, or a search worker's own)."""
    receipt = StepReceipt(step=step, result=result, artifacts=output_digests(step, outputs))
    write_once(receipt_uri(run_root, name), _canonical(receipt.wire()))


def read_receipt(run_root: str, step: StepName) -> StepReceipt:
    uri = receipt_uri(run_root, step)
    try:
        with fsspec.open(uri, "rb") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise StepError(
            f"the {step} step left no receipt at {uri}: its result did not come from this run"
        ) from None
    except (OSError, ValueError) as error:
        raise StepError(f"cannot read the {step} step's receipt {uri}: {error}") from None
    try:
        return StepReceipt.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise StepError(f"the {step} step's receipt {uri} is malformed: {problems}") from None


def check_inputs(run_root: str, step: StepName, params: dict[str, Any], inputs: Path) -> None:
    """Refuse to run on an earlier result or input artifact other than what its step recorded."""
    receipts = {earlier: read_receipt(run_root, earlier) for earlier in earlier_steps(step)}
    for earlier, receipt in receipts.items():
        if _canonical(params.get(earlier)) != _canonical(receipt.result):
            raise StepError(
                f"the {earlier} result in this step's params differs from what the {earlier} "
                f"step recorded ({receipt_uri(run_root, earlier)}): refusing to run on it"
            )
    for name in ARTIFACTS[step][0]:
        if not (inputs / name).exists():
            continue  # the step itself says the artifact is missing
        recorded = receipts[producer(name)].artifacts.get(name)
        if recorded is None or path_digest(inputs / name) != recorded:
            raise StepError(
                f"input artifact {name} is not what the {producer(name)} step produced "
                f"(recorded sha256 {recorded or 'none'}): refusing to run on it"
            )


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
