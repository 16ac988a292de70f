"""`python -m aiml024.runtime STEP ...`: result.json on success, `error:` and exit 2 on bad data,
stdout reserved for progress events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_search import churn_like, record_earlier, spec, step_params


def runtime(step: str, params: dict | str, inputs: Path, outputs: Path, record: bool = True):
    """Run one step as the Workflow's pod does. A params document without a store gets one
    beside `outputs`, and (`record`) the earlier steps' receipts, as if they had run."""
    if isinstance(params, dict) and not params.get("artifactStore"):
        params = {**params, "artifactStore": (outputs.parent / "store").as_uri()}
        if record:
            try:
                record_earlier(step, params, inputs)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - params the step must refuse itself
                pass
    text = params if isinstance(params, str) else json.dumps(params)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "aiml024.runtime",
            step,
            "--params",
            text,
            "--inputs",
            str(inputs),
            "--outputs",
            str(outputs),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_step_error_exits_2_with_one_error_line(tmp_path: Path) -> None:
    done = runtime("search", step_params(spec()), tmp_path / "in", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: input artifact")
    assert done.stdout == ""
    assert not (tmp_path / "out" / "result.json").exists()


def test_an_invalid_spec_or_params_exits_2(tmp_path: Path) -> None:
    bad_spec = runtime("search", step_params({"task": "classification"}), tmp_path, tmp_path / "o")
    assert bad_spec.returncode == 2 and "error: invalid spec: spec.data" in bad_spec.stderr
    not_json = runtime("search", "{nope", tmp_path, tmp_path / "o")
    assert not_json.returncode == 2 and "error: --params" in not_json.stderr


def test_a_missing_or_mistyped_params_key_is_named_on_one_error_line(tmp_path: Path) -> None:
    """Each step parses its params with its model (api.step_params): the key is named, with
    its place in the document, before any work (or heavy import) starts."""
    params = step_params(spec())
    del params["experimentUid"]
    params["validate"]["rows"] = "many"
    params["merge"] = "maybe"
    done = runtime("search", params, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 2 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: invalid params: ")
    assert "'experimentUid' is missing" in errors[0]
    assert "'validate.rows': Input should be a valid integer" in errors[0]
    assert "'merge': Input should be a valid boolean" in errors[0]
    # A key the step does not read is refused too: a typo never passes silently.
    unknown = runtime("ingest", {**step_params(spec()), "wrokflow": "x"}, tmp_path, tmp_path / "o")
    assert unknown.returncode == 2
    assert "'ingest' is not a known key" in unknown.stderr
    assert "'wrokflow' is not a known key" in unknown.stderr


def test_search_writes_result_json_and_only_events_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    churn_like(400).to_parquet(tmp_path / "in" / "clean")
    params = step_params(spec(trials=2), rows=400)
    done = runtime("search", params, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["trialsCompleted"] + result["trialsPruned"] == 2
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["trial", "trial"]
    assert {"number", "total", "value", "best", "learner"} <= set(events[0])


def test_a_forged_earlier_result_or_artifact_is_refused(tmp_path: Path) -> None:
    """Argo hands a step the earlier results and artifacts from Workflow status, which
    namespace editors can write: each is checked against its producer's receipt."""
    (tmp_path / "in").mkdir()
    churn_like(400).to_parquet(tmp_path / "in" / "clean")
    params = step_params(spec(trials=2), rows=400)
    # No receipts at all: as if ingest and validate never ran in this run.
    unrecorded = runtime("search", params, tmp_path / "in", tmp_path / "a", record=False)
    assert unrecorded.returncode == 2
    assert "the ingest step left no receipt" in unrecorded.stderr
    # Receipts of the real results; then a forged validate result in the params.
    forged = {**params, "validate": {**params["validate"], "rows": 1}}
    runtime("search", params, tmp_path / "in", tmp_path / "b", record=True)  # records them
    done = runtime("search", forged, tmp_path / "in", tmp_path / "b2", record=False)
    assert done.returncode == 2, done.stderr
    assert "the validate result in this step's params differs" in done.stderr
    # A swapped input artifact (another table than validate produced).
    churn_like(300).to_parquet(tmp_path / "in" / "clean")
    swapped = runtime("search", params, tmp_path / "in", tmp_path / "b3", record=False)
    assert swapped.returncode == 2
    assert "input artifact clean is not what the validate step produced" in swapped.stderr


def test_a_step_leaves_its_receipt_once(tmp_path: Path) -> None:
    from aiml024.runtime.artifacts import path_digest

    (tmp_path / "in").mkdir()
    churn_like(400).to_parquet(tmp_path / "in" / "clean")
    params = step_params(spec(trials=2), rows=400)
    done = runtime("search", params, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    receipt = json.loads(
        (tmp_path / "store" / "default/churn/uid-churn/churn-g1/steps/search.json").read_text()
    )
    assert receipt["result"] == json.loads((tmp_path / "out" / "result.json").read_text())
    assert receipt["artifacts"] == {"search": path_digest(tmp_path / "out" / "search")}


def test_a_steps_clock_starts_with_its_process() -> None:
    import time

    from aiml024.runtime import process_started, set_step_clock, step_clock

    assert process_started() <= time.monotonic()
    before = time.monotonic()
    assert step_clock() >= before  # no dispatcher: the step's own start
    set_step_clock(123.0)
    try:
        assert step_clock() == 123.0
    finally:
        set_step_clock(None)

