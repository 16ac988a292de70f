"""`python -m aiml024.runtime STEP --params JSON --inputs DIR --outputs DIR`

Parses --params with the step's model (aiml024.api.step_params.PARAMS[STEP]), checks the
earlier steps' results and the input artifacts against their receipts (aiml024.runtime.receipts),
runs aiml024.runtime.steps.<STEP>.run, records its receipt under the run root and writes its
result to DIR/result.json. stdout carries only
progress events (JSON lines); logs and library chatter go to stderr. Exit 2 with
`error: <message>` on bad data or parameters (StepError: a missing, renamed or mistyped params
key is named), exit 1 on any other failure.
"""

from __future__ import annotations

import os

from . import available_cpus, process_started

process_started()  # before the heavy imports: a step's time budget counts them

# Before numpy and the learners load: one BLAS/OpenMP pool sized to this container's CPUs.
_threads = str(available_cpus())
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, _threads)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TextIO  # noqa: E402

from aiml024.api.step_params import STEPS  # noqa: E402

from . import set_event_stream, set_step_clock  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiml024.runtime")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--params", required=True, help="step parameters as a JSON object")
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--outputs", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

    events = _events_only_stdout()
    set_event_stream(events)
    set_step_clock(process_started())
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
    except ValueError as error:
        print(f"error: --params is not a JSON object: {error}", file=sys.stderr)
        return 2

    from .receipts import check_inputs, write_receipt
    from .steps import StepError, params_for, run_root_from

    try:
        typed = params_for(args.step, params)  # before the step's heavy imports
        run_root = run_root_from(typed)
        check_inputs(run_root, args.step, params, args.inputs)
        module = importlib.import_module(f"aiml024.runtime.steps.{args.step}")
        args.outputs.mkdir(parents=True, exist_ok=True)
        result: Any = module.run(typed, args.inputs, args.outputs)
        worker = getattr(typed, "worker", None)
        receipt = args.step if worker is None else f"{args.step}-worker-{worker}"
        write_receipt(run_root, receipt, args.step, result, args.outputs)
        (args.outputs / "result.json").write_text(json.dumps(result, sort_keys=True) + "\n")
    except StepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the workflow needs one line and an exit code
        traceback.print_exc(file=sys.stderr)
        print(f"error: internal error in step {args.step}: {error}", file=sys.stderr)
        return 1
    finally:
        set_event_stream(None)
        set_step_clock(None)
        events.flush()
    return 0


def _events_only_stdout() -> TextIO:
    """Keep the real stdout for events; route everything else written to fd 1 to stderr
    (native libraries print there too)."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


if __name__ == "__main__":
    sys.exit(main())
