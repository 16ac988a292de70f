"""Distributed search: N worker processes share one Optuna study (PostgreSQL here, a locked
journal file locally) and a merge step ranks every worker's trials. No trial is lost or run
twice: trial numbers are 0..n-1, each once, and the workers' counts add up to the cap."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_search import churn_like, record_earlier, step_params
from tests.unit.test_search import spec as search_spec

from aiml024.api.step_params import SearchParams
from aiml024.runtime.steps import parse_params
from aiml024.runtime.steps import search as search_step

TRIALS = 6


def _postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(pg_ctl).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a random 127.0.0.1 port (as user `postgres` when the
    tests run as root: the server refuses to run as root). Skips only without the binaries."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; "
            "install them with `apt-get install -y postgresql`"
        )
    pytest.importorskip("psycopg", reason="psycopg (v3) is needed for SQLAlchemy's driver")
    root = Path(tempfile.mkdtemp(prefix="aiml024-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")  # created by Debian's postgresql package
        os.chown(root, user.pw_uid, user.pw_gid)
        # runuser lives in /usr/sbin, which a non-login PATH may lack.
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        as_user = [runuser or "runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "optuna", "--auth=trust",
         "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
         "-o", f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://optuna@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def spec(**search: Any) -> dict[str, Any]:
    """The search tests' spec, with two workers sharing the study."""
    shared = {"trials": TRIALS, "timeBudgetSeconds": 120, "parallelism": 2,
              "learners": ["lightgbm", "linear"]}  # fmt: skip
    return search_spec(**{**shared, **search})


def params(tmp: Path, the_spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    store = (tmp / "store").as_uri()
    return step_params(the_spec, rows=500, artifactStore=store, **extra)


def run_workers(tmp: Path, the_spec: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """Both workers at once, as separate processes (as the workflow's pods run)."""
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    churn_like(500).to_parquet(tmp / "in" / "clean")
    record_earlier("search", params(tmp, the_spec, **extra), tmp / "in")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiml024.runtime",
                "search",
                "--params",
                json.dumps(params(tmp, the_spec, worker=w, **extra)),
                "--inputs",
                str(tmp / "in"),
                "--outputs",
                str(tmp / f"worker-{w}"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for w in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    return [json.loads((tmp / f"worker-{w}" / "result.json").read_text()) for w in range(2)]


def check_shared(tmp: Path, workers: list[dict[str, Any]], merged: dict[str, Any]) -> None:
    numbers = sorted(n for w in workers for n in w["trials"])
    assert numbers == list(range(TRIALS)), "a trial was lost or run twice"
    assert [w["quota"] for w in workers] == [3, 3]
    assert all(len(w["trials"]) == 3 for w in workers), "each worker ran its own share"
    done = sum(w["trialsCompleted"] + w["trialsPruned"] + w["trialsFailed"] for w in workers)
    assert done == TRIALS
    assert merged["trialsCompleted"] == sum(w["trialsCompleted"] for w in workers)
    board_trials = {row["trial"] for row in merged["leaderboard"] if row.get("trial") is not None}
    by_worker = [set(w["trials"]) for w in workers]
    assert board_trials & by_worker[0] and board_trials & by_worker[1], "merge saw both workers"
    shared = tmp / "store" / "default" / "churn" / "uid-churn" / "churn-g1" / "search"
    for row in merged["leaderboard"]:
        if row.get("trial") is not None:
            assert (shared / "oof" / f"trial-{row['trial']}.npy").exists()
            assert (tmp / "out" / "search" / "oof" / f"trial-{row['trial']}.npy").exists()


def test_two_workers_share_a_postgresql_study(tmp_path: Path, postgres_url: str) -> None:
    the_spec = spec()
    workers = run_workers(tmp_path, the_spec, studyStorage=postgres_url)
    merged = search_step.run(
        params(tmp_path, the_spec, merge=True, studyStorage=postgres_url),
        tmp_path / "in",
        tmp_path / "out",
    )
    check_shared(tmp_path, workers, merged)

    import optuna

    study = optuna.load_study(study_name="default.churn.uid-churn.churn-g1", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == list(range(TRIALS))
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}


def test_two_workers_share_a_locked_journal_file_without_a_database(tmp_path: Path) -> None:
    the_spec = spec()
    workers = run_workers(tmp_path, the_spec)
    merged = search_step.run(
        params(tmp_path, the_spec, merge=True), tmp_path / "in", tmp_path / "out"
    )
    check_shared(tmp_path, workers, merged)
    assert (tmp_path / "out" / "search" / "study.journal").exists()


def test_a_journal_on_object_storage_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from aiml024.runtime.steps import StepError

    document = step_params(spec(), artifactStore="memory://bucket", worker=0)
    with pytest.raises(StepError, match="needs a study-storage URL"):
        search_step.shared_storage(parse_params(SearchParams, document))


def test_the_local_executor_runs_the_compiled_distributed_workflow(tmp_path: Path) -> None:
    """What `aiml024 apply` does with spec.search.parallelism = 2: the compiled Workflow's
    worker items run as parallel processes on a shared journal, then the merge and evaluate."""
    from aiml024.api import parse_object
    from aiml024.compiler import compile_experiment
    from aiml024.local.executor import LocalExecutor

    csv = tmp_path / "churn.csv"
    churn_like(600).to_csv(csv, index=False)
    exp = parse_object(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "churn", "uid": "6f1c2b9a-0d3e-4f5a-8b7c-1e2d3f4a5b6c"},
            "spec": {**spec(), "data": {"uri": str(csv)}, "model": {"name": "churn-model"}},
        }
    )
    workflow = compile_experiment(exp)  # type: ignore[arg-type]
    run = LocalExecutor(tmp_path / "run").run(
        workflow, parameters={"artifact-store": (tmp_path / "store").as_uri()}
    )
    assert run.phase == "Succeeded", run.message
    workers = [json.loads(run.nodes[f"search-workers({w}:{w})"].outputs["result"]) for w in (0, 1)]
    assert sorted(n for w in workers for n in w["trials"]) == list(range(TRIALS))
    merged = json.loads(run.nodes["search"].outputs["result"])
    assert merged["trialsCompleted"] == sum(w["trialsCompleted"] for w in workers)
    evaluated = json.loads(run.nodes["evaluate"].outputs["result"])
    assert evaluated["metrics"]["auc"] > 0.7
    assert run.nodes["register"].phase == "Succeeded"
