"""`python -m aiml024.runtime STEP ...`: result.json on success, `error:` and exit 2 on bad data,
stdout reserved for progress events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_search import TYPES, churn_like, spec


def runtime(step: str, params: dict | str, inputs: Path, outputs: Path):
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
    done = runtime("search", {"spec": spec()}, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: input artifact")
    assert done.stdout == ""
    assert not (tmp_path / "out" / "result.json").exists()


def test_an_invalid_spec_or_params_exits_2(tmp_path: Path) -> None:
    bad_spec = runtime("search", {"spec": {"task": "classification"}}, tmp_path, tmp_path / "o")
    assert bad_spec.returncode == 2 and "error: invalid spec" in bad_spec.stderr
    not_json = runtime("search", "{nope", tmp_path, tmp_path / "o")
    assert not_json.returncode == 2 and "error: --params" in not_json.stderr


def test_search_writes_result_json_and_only_events_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    churn_like(400).to_parquet(tmp_path / "in" / "clean")
    params = {
        "experiment": "churn",
        "namespace": "default",
        "experimentUid": "uid-churn",
        "workflow": "churn-g1",
        "spec": spec(trials=2),
        "validate": {"types": TYPES},
    }
    done = runtime("search", params, tmp_path / "in", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["trialsCompleted"] + result["trialsPruned"] == 2
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["trial", "trial"]
    assert {"number", "total", "value", "best", "learner"} <= set(events[0])


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
