"""End-to-end helpers: run the real `aiml024` command in a private state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "state"


def make_cli(home: Path, cwd: Path) -> Cli:
    def cli(*args: str, user: str | None = None, timeout: float = 600) -> Result:
        env = dict(os.environ, AIML024_HOME=str(home), COLUMNS="200", NO_COLOR="1", TERM="dumb")
        if user:
            env["AIML024_USER"] = user
        done = subprocess.run(
            [sys.executable, "-m", "aiml024.cli.main", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        return Result(done.returncode, done.stdout, done.stderr)

    return cli


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Iterator[Cli]:
    run = make_cli(home, tmp_path)
    yield run
    # Never leave a model server behind, whatever the test did.
    servers = home / "servers"
    if servers.exists():
        from aiml024.local.server import ServerInfo, stop_server

        for info in servers.glob("*.json"):
            stop_server(ServerInfo.model_validate_json(info.read_text()))


def small_table(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small learnable table with the column kinds users have."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    plan = rng.choice(["basic", "pro", "family"], size=rows)
    logit = 1.5 * x + (plan == "basic") * 1.0 - 0.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({
        "account": [f"A{i:05d}" for i in range(rows)],
        "usage": x.round(3),
        "plan": plan,
        "signup": pd.date_range("2024-01-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
        "left": y,
    })  # fmt: skip


def write_experiment(directory: Path, data: str, name: str = "small", **spec: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        "task": "classification",
        "data": {"uri": data},
        "target": "left",
        "idColumn": "account",
        "split": {"folds": 2, "holdoutFraction": 0.25},
        "search": {"trials": 4, "timeBudgetSeconds": 5, "learners": ["lightgbm"]},
        "model": {"name": f"{name}-model"},
    }
    body.update(spec)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": name}, "spec": body,
    }))  # fmt: skip
    return path
