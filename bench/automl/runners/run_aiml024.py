"""aiml024 through its step contract: ingest -> validate -> search -> evaluate, then the bundle.

Each step runs as `python -m aiml024.runtime STEP --params JSON --inputs DIR --outputs DIR`,
exactly as the workflow runs it, artifacts copied between steps as the local executor does.
The fit time is the wall clock of all four steps, interpreter start-ups included.
spec.search.timeBudgetSeconds bounds search + evaluate (the runtime counts from each step's
process start and the search leaves evaluate's refit its estimated time), so the runner gives it
the whole budget less what ingest + validate took and a small margin (artifact copies, spawns).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .common import Job, parse, write

OBJECTIVES = {"binary": "maximize_auc", "multiclass": "minimize_logloss",
              "regression": "minimize_rmse"}
# Outside timeBudgetSeconds besides ingest + validate (measured per run): copying artifacts
# between steps and spawning the two later processes; timeBudgetSeconds covers evaluate's refit.
MARGIN_SECONDS = 1.0
HOLDOUT_FRACTION = 0.05  # the bench's test fold is the real holdout; keep most rows for training


class StepFailed(RuntimeError):
    pass


def spec_for(job: Job, search_seconds: int) -> dict[str, Any]:
    """The Experiment spec (wire format) the bench trains with."""
    search: dict[str, Any] = {
        # The time budget, not a trial count, is what ends the search (as for the peers).
        "trials": 100_000,
        "timeBudgetSeconds": search_seconds,
        "seed": job.seed,
    }
    learners = os.environ.get("BENCH_AIML024_LEARNERS")
    if learners:
        search["learners"] = learners.split(",")
    return {
        "task": "regression" if job.task == "regression" else "classification",
        "data": {"uri": str(job.train_path), "format": "csv"},
        "target": job.target,
        "objective": OBJECTIVES[job.task],
        "split": {
            "strategy": "kfold" if job.task == "regression" else "stratified-kfold",
            "holdoutFraction": HOLDOUT_FRACTION,
        },
        "search": search,
        "resources": {"cpu": str(job.cpus)},
    }


class Pipeline:
    def __init__(self, job: Job):
        self.job = job
        self.root = job.work / "steps"
        self.results: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.step_seconds: dict[str, float] = {}

    def params(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "experiment": "bench",
            # The run's identity names its artifact paths and study (api.steps.run_root).
            "namespace": "default",
            "experimentUid": f"bench-{self.job.seed}",
            "spec": spec,
            "artifactStore": (self.job.work / "store").as_uri(),
            "studyStorage": "",
            "codeVersion": _version(),
            "workflow": f"bench-{self.job.seed}",
            **self.results,
        }

    def step(self, name: str, spec: dict[str, Any], artifacts: dict[str, Path]) -> Path:
        """Run one step with the given input artifacts; returns its outputs directory."""
        inputs, outputs = self.root / name / "inputs", self.root / name / "outputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for artifact, source in artifacts.items():
            if source.is_dir():
                shutil.copytree(source, inputs / artifact)
            else:
                shutil.copy(source, inputs / artifact)
        params = json.dumps(self.params(spec))
        (self.root / f"{name}.params.json").write_text(params)  # to rerun a step by hand
        started = time.monotonic()
        timeout = self.job.budget * 3 + 120
        with open(self.root / f"{name}.stderr", "w") as stderr:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "aiml024.runtime", name, "--params", params,
                     "--inputs", str(inputs), "--outputs", str(outputs)],
                    stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(f"step {name} killed after {timeout:g}s") from None
        self.step_seconds[name] = round(time.monotonic() - started, 3)
        for line in done.stdout.splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass
        if done.returncode != 0:
            lines = (self.root / f"{name}.stderr").read_text().strip().splitlines()
            errors = [line for line in lines if line.startswith("error:")]
            raise StepFailed(f"step {name} exited {done.returncode}: "
                             f"{(errors or lines or ['(no output)'])[-1]}")
        self.results[name] = json.loads((outputs / "result.json").read_text())
        return outputs


def main(job: Job) -> None:
    pipeline = Pipeline(job)
    started = time.monotonic()
    search_seconds = 1
    overhead = 0.0
    try:
        spec = spec_for(job, search_seconds)
        ingest = pipeline.step("ingest", spec, {})
        validate = pipeline.step("validate", spec, {"dataset": ingest / "dataset"})
        overhead = time.monotonic() - started + MARGIN_SECONDS
        search_seconds = max(1, math.floor(job.budget - overhead))
        spec = spec_for(job, search_seconds)
        search = pipeline.step("search", spec, {"clean": validate / "clean"})
        evaluate = pipeline.step("evaluate", spec, {"clean": validate / "clean",
                                                    "search": search / "search"})
    except StepFailed as error:
        _fail(job, pipeline, started, search_seconds, str(error))
        raise SystemExit(1) from None
    fit_seconds = round(time.monotonic() - started, 3)

    from aiml024.runtime.bundle import load_bundle

    X_test = job.test[job.X.columns]
    with job.timed("predict"):
        bundle = load_bundle(evaluate / "bundle")
        out = bundle.predict(X_test)
        classes = list(bundle.meta.classes) or None
        if job.task == "regression":
            predictions = out["score"].to_numpy()
        elif job.task == "binary":
            # Bundle.predict's score is P(classes[1]).
            predictions = [[1 - s, s] for s in out["score"]]
        else:
            # Bundle.predict gives only the top class's score; log loss needs every class.
            predictions = bundle.pipeline.predict_proba(bundle.frame(X_test))
    write(job, predictions, classes, {
        **_info(pipeline, started, search_seconds),
        "overhead_seconds": round(overhead, 3),
        "fit_seconds": fit_seconds,
    })


def _info(pipeline: Pipeline, started: float, search_seconds: int) -> dict[str, Any]:
    search = pipeline.results.get("search", {})
    evaluate = pipeline.results.get("evaluate", {})
    trials = [e for e in pipeline.events
              if e.get("event") == "trial" and e.get("state", "complete") == "complete"]
    return {
        "framework": "aiml024",
        "version": _version(),
        "search_budget_seconds": search_seconds,
        "step_seconds": pipeline.step_seconds,
        "trials": search.get("trialsCompleted", len(trials)),
        "trials_by_learner": dict(Counter(e.get("learner") for e in trials)),
        # Every learner that got a trial, plus the ensemble when evaluate chose it.
        "models": sorted({str(e.get("learner")) for e in trials}
                         | ({"ensemble"} if evaluate.get("learner") == "ensemble" else set())),
        "best_model": evaluate.get("learner"),
        "members": evaluate.get("members"),
        "pii": pipeline.results.get("validate", {}).get("pii"),
        "elapsed_seconds": round(time.monotonic() - started, 3),
    }


def _fail(job: Job, pipeline: Pipeline, started: float, search_seconds: int, error: str) -> None:
    info = {**_info(pipeline, started, search_seconds), "error": error}
    (job.out / "info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(f"error: {error}", file=sys.stderr)


def _version() -> str:
    from importlib import metadata

    return metadata.version("aiml024")


if __name__ == "__main__":
    main(parse())
