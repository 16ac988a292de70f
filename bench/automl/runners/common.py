"""The runners' shared command line and output files."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class Job:
    train: pd.DataFrame
    test: pd.DataFrame  # features only: the bench keeps the test labels to itself
    target: str
    task: str  # binary | multiclass | regression
    budget: float  # seconds of wall clock for the whole fit
    cpus: int
    seed: int
    out: Path
    work: Path  # scratch space (model files); the bench deletes it afterwards
    train_path: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def X(self) -> pd.DataFrame:
        return self.train.drop(columns=[self.target])

    @property
    def y(self) -> pd.Series:
        return self.train[self.target]

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - started, 3)


def parse(argv: list[str] | None = None) -> Job:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", choices=("binary", "multiclass", "regression"), required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    return Job(
        train=pd.read_csv(args.train),
        test=pd.read_csv(args.test),
        target=args.target,
        task=args.task,
        budget=args.budget,
        cpus=args.cpus,
        seed=args.seed,
        out=args.out,
        work=work,
        train_path=args.train.resolve(),
    )


def write(job: Job, predictions: Any, classes: list[Any] | None, info: dict[str, Any]) -> None:
    """predictions: an (n, k) probability array in `classes` order, or n regression values.

    `fit_seconds` in info must be the framework's training wall clock (what its budget limits).
    """
    if job.task == "regression":
        frame = pd.DataFrame({"prediction": pd.Series(predictions, dtype=float).to_numpy()})
    else:
        assert classes is not None
        frame = pd.DataFrame(
            pd.DataFrame(predictions).to_numpy(dtype=float),
            columns=[f"proba:{c}" for c in classes],
        )
    frame.to_csv(job.out / "predictions.csv", index=False)
    info = {**info, "timings": job.timings}
    (job.out / "info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
