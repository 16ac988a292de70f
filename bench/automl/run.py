r"""aiml024 vs FLAML vs AutoGluon vs default LightGBM at the same wall-clock budget.

    python -m bench.automl.run --setup                      # create the peers' venvs only
    python -m bench.automl.run --suite --budget 60 --folds 3 [--frameworks aiml024,flaml]
    python -m bench.automl.run --train a.csv --test b.csv --target y \\
        --task classification --budget 60 [--peers flaml,autogluon]

Every fit runs in its own subprocess (the peers with their venv's python), one at a time,
pinned to the same CPUs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from . import envs
from .datasets import SUITE
from .scoring import BASELINE, render, score, summarize

FRAMEWORKS = ("aiml024", "flaml", "autogluon", BASELINE)
PEERS = ("flaml", "autogluon")  # the frameworks that live in their own venvs
RESULTS_DIR = envs.BENCH_DIR / "results"
# Inside the data venv: gitignored, and rebuilt with it.
DATA_CACHE = envs.env_dir("data") / "datasets"


def python_for(framework: str) -> str:
    # aiml024 and the baseline run in the venv the bench itself runs in.
    return str(envs.python_of(framework)) if framework in PEERS else sys.executable


def cpu_set(cpus: int | None) -> list[int]:
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[: cpus or len(allowed)]


def run_framework(framework: str, train: Path, test: Path, target: str, task: str,
                  budget: float, cpus: list[int], seed: int, out: Path,
                  keep_work: bool = False, extra_env: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """One fit + predict in a subprocess; returns status, info.json and timings."""
    out.mkdir(parents=True, exist_ok=True)
    threads = str(len(cpus))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    command = [python_for(framework), "-m", f"bench.automl.runners.run_{framework}",
               "--train", str(train), "--test", str(test), "--target", target,
               "--task", task, "--budget", f"{budget:g}", "--cpus", threads,
               "--seed", str(seed), "--out", str(out)]
    # Generous: a fit that never returns must not stall the suite, but a slow one is data.
    timeout = budget * 3 + 300
    started = time.monotonic()
    status, error = "ok", None
    with open(out / "log.txt", "w") as log:
        # Own session: on timeout the whole process group goes (AutoGluon and torch fork).
        process = subprocess.Popen(command, cwd=envs.REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        try:
            code = process.wait(timeout=timeout)
            if code != 0:
                status, error = "failed", _last_error(out / "log.txt", code)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status, error = "timeout", f"killed after {timeout:g}s"
    wall = round(time.monotonic() - started, 3)
    info_path = out / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if status == "ok" and not (out / "predictions.csv").is_file():
        status, error = "failed", "no predictions.csv"
    if not keep_work:
        shutil.rmtree(out / "work", ignore_errors=True)  # AutoGluon's models can be large
    fit = info.get("fit_seconds")
    return {
        "framework": framework,
        "status": status,
        "error": error or info.get("error"),
        "fit_seconds": fit,
        "wall_seconds": wall,  # the whole subprocess: imports, data loading, predict
        # The baseline has no budget to keep.
        "overrun": None if fit is None or framework == BASELINE else round(fit / budget - 1, 4),
        "models": info.get("models"),
        "best_model": info.get("best_model"),
        "info": info,
    }


def _last_error(log: Path, code: int) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return f"exit {code}: {(errors or lines or ['(no output)'])[-1][:500]}"


def evaluate(result: dict[str, Any], out: Path, task: str, y_test: pd.Series,
             classes: list[str] | None, positive: str | None) -> dict[str, Any]:
    if result["status"] != "ok":
        return result
    try:
        predictions = pd.read_csv(out / "predictions.csv")
        if len(predictions) != len(y_test):
            raise ValueError(f"{len(predictions)} predictions for {len(y_test)} test rows")
        result["metrics"] = score(task, y_test, predictions, classes, positive)
    except (ValueError, KeyError) as error:
        result.update(status="failed", error=f"scoring: {error}")
    return result


# -- the suite -------------------------------------------------------------------------------


def export_datasets(names: list[str]) -> dict[str, Any]:
    """The suite's CSVs, exported once by the data venv (cached under bench/.venvs/data)."""
    manifest_path = DATA_CACHE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if not all(n in manifest and (DATA_CACHE / f"{n}.csv").is_file() for n in names):
        envs.create("data")
        subprocess.run([str(envs.python_of("data")), "-m", "bench.automl.datasets",
                        str(DATA_CACHE), *[d.name for d in SUITE]],
                       cwd=envs.REPO_ROOT, check=True)
        manifest = json.loads(manifest_path.read_text())
    return {n: manifest[n] for n in names}


def folds_of(df: pd.DataFrame, meta: dict[str, Any], n_folds: int, seed: int) -> list[Any]:
    y = df[meta["target"]]
    if meta["task"] == "regression":
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(df))
    return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(df, y))


def run_suite(args: argparse.Namespace) -> int:
    names = args.datasets.split(",") if args.datasets else [d.name for d in SUITE]
    unknown = set(names) - {d.name for d in SUITE}
    if unknown:
        sys.exit(f"unknown datasets: {', '.join(sorted(unknown))}")
    # The baseline anchors the normalized score: the suite always runs it.
    chosen = _frameworks(args.frameworks or "aiml024,flaml,autogluon")
    frameworks = [f for f in chosen if f != BASELINE] + [BASELINE]
    for fw in frameworks:
        if fw in PEERS:
            envs.create(fw)
    manifest = export_datasets(names)
    cpus = cpu_set(args.cpus)
    run_dir = RESULTS_DIR / f"suite-{_stamp()}"
    document = _document(args, frameworks, cpus, "suite")
    document["datasets"] = manifest
    records: list[dict[str, Any]] = document["records"]
    for name in names:
        meta = manifest[name]
        df = pd.read_csv(DATA_CACHE / f"{name}.csv")
        target, task = meta["target"], meta["task"]
        classes = None if task == "regression" else sorted(df[target].astype(str).unique())
        positive = None if meta["positive"] is None else str(meta["positive"])
        for fold, (train_idx, test_idx) in enumerate(folds_of(df, meta, args.folds, args.seed)):
            fold_dir = run_dir / "work" / name / f"fold{fold}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            train_csv, test_csv = fold_dir / "train.csv", fold_dir / "test.csv"
            df.iloc[train_idx].to_csv(train_csv, index=False)
            test = df.iloc[test_idx]
            test.drop(columns=[target]).to_csv(test_csv, index=False)
            for fw in frameworks:
                out = fold_dir / fw
                result = run_framework(fw, train_csv, test_csv, target, task, args.budget,
                                       cpus, args.seed, out, args.keep_work, _aiml024_env(args))
                result = evaluate(result, out, task, test[target], classes, positive)
                record = {"dataset": name, "task": task, "fold": fold, **result}
                records.append(record)
                _save(run_dir, document, args.budget)
                print(_progress(record), flush=True)
    summary = _save(run_dir, document, args.budget)
    print()
    print(render(summary))
    print(f"\nresults: {run_dir / 'results.json'}")
    limit = summary["per_framework"].get("aiml024", {}).get("max_overrun")
    if limit is not None and limit > 0.10:
        print(f"WARNING: aiml024 overran its budget by {limit:.1%} (limit 10%)")
    return 0


def _progress(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    fit = record.get("fit_seconds")
    fit_text = "-" if fit is None else f"{fit:.1f}s"
    tail = shown if record["status"] == "ok" else f"{record['status']}: {record['error']}"
    return (f"{record['dataset']:16s} fold {record['fold']} {record['framework']:10s} "
            f"fit {fit_text:>7s} wall {record['wall_seconds']:.1f}s  {tail}")


# -- the user's own data -----------------------------------------------------------------------


def run_single(args: argparse.Namespace) -> int:
    train = pd.read_csv(args.train)
    test = pd.read_csv(args.test)
    for frame, path in ((train, args.train), (test, args.test)):
        if args.target not in frame.columns:
            sys.exit(f"error: target {args.target!r} is not a column of {path}")
    if args.task == "regression":
        task, classes, positive = "regression", None, None
    else:
        classes = sorted(pd.concat([train[args.target], test[args.target]])
                         .dropna().astype(str).unique())
        task = "binary" if len(classes) == 2 else "multiclass"
        positive = classes[1] if task == "binary" else None  # as scikit-learn's convention
    frameworks = ["aiml024", *[f for f in _frameworks(args.peers or "") if f != "aiml024"]]
    for fw in frameworks:
        if fw in PEERS:
            envs.create(fw)
    cpus = cpu_set(args.cpus)
    run_dir = RESULTS_DIR / f"single-{_stamp()}"
    run_dir.mkdir(parents=True)
    train_csv, test_csv = run_dir / "train.csv", run_dir / "test.csv"
    train.to_csv(train_csv, index=False)  # the same bytes for every framework
    test.drop(columns=[args.target]).to_csv(test_csv, index=False)
    document = _document(args, frameworks, cpus, "single")
    for fw in frameworks:
        out = run_dir / fw
        result = run_framework(fw, train_csv, test_csv, args.target, task, args.budget, cpus,
                               args.seed, out, args.keep_work, _aiml024_env(args))
        result = evaluate(result, out, task, test[args.target], classes, positive)
        document["records"].append({"dataset": args.train.name, "task": task, "fold": 0,
                                    **result})
        print(json.dumps({
            "framework": fw, "status": result["status"], "task": task,
            "metrics": result.get("metrics"), "fit_seconds": result["fit_seconds"],
            "budget": args.budget, "overrun": result["overrun"],
            "models": result["models"], "best_model": result["best_model"],
            **({"error": result["error"]} if result["status"] != "ok" else {}),
        }, default=str), flush=True)
    (run_dir / "results.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 0


# -- plumbing ----------------------------------------------------------------------------------


def _frameworks(listing: str) -> list[str]:
    chosen = [f for f in listing.split(",") if f]
    unknown = set(chosen) - set(FRAMEWORKS)
    if unknown:
        sys.exit(f"unknown frameworks: {', '.join(sorted(unknown))}; use {', '.join(FRAMEWORKS)}")
    return list(dict.fromkeys(chosen))


def _aiml024_env(args: argparse.Namespace) -> dict[str, str]:
    """Which learners the aiml024 runner searches."""
    env: dict[str, str] = {}
    if args.aiml024_learners:
        env["BENCH_AIML024_LEARNERS"] = args.aiml024_learners
    return env


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _document(args: argparse.Namespace, frameworks: list[str], cpus: list[int],
              mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "budget": args.budget,
        "folds": getattr(args, "folds", None),
        "seed": args.seed,
        "cpus": cpus,
        "aiml024": _aiml024_env(args),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "frameworks": frameworks,
        "environments": {fw: envs.env_info(fw) for fw in frameworks if fw in PEERS}
        | {"main": _main_versions()},
        "records": [],
    }


def _main_versions() -> dict[str, str]:
    from importlib import metadata

    names = ("aiml024", "lightgbm", "xgboost", "xgboost-cpu", "scikit-learn", "optuna", "pandas",
             "numpy")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # xgboost ships as xgboost or xgboost-cpu
            pass
    return versions


def _save(run_dir: Path, document: dict[str, Any], budget: float) -> dict[str, Any]:
    summary = summarize(document["records"], budget)
    document["summary"] = summary
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(
        json.dumps(document, indent=2, default=_json_default) + "\n")
    (run_dir / "summary.txt").write_text(render(summary) + "\n")
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.automl.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--setup", action="store_true", help="only create the peers' venvs")
    mode.add_argument("--suite", action="store_true", help="run the bundled dataset suite")
    mode.add_argument("--train", type=Path, help="your training CSV (with --test, --target)")
    parser.add_argument("--test", type=Path)
    parser.add_argument("--target")
    parser.add_argument("--task", choices=("classification", "regression"))
    parser.add_argument("--budget", type=float, default=60, help="seconds per fit (default 60)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frameworks", help="suite: comma list of aiml024,flaml,autogluon "
                        "(default all; the LightGBM baseline always runs)")
    parser.add_argument("--peers", help="single run: comma list of flaml,autogluon,lightgbm")
    parser.add_argument("--datasets", help="suite: comma list (default all): "
                        + ",".join(d.name for d in SUITE))
    parser.add_argument("--cpus", type=int, help="pin every fit to this many CPUs (default all)")
    parser.add_argument("--aiml024-learners", metavar="LIST",
                        help="aiml024 spec.search.learners (default: the product default)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep model files and step artifacts under bench/results")
    args = parser.parse_args(argv)
    if args.setup:
        for name in ("data", *PEERS):
            record = envs.create(name)
            print(json.dumps({k: v for k, v in record.items() if k != "packages"}), flush=True)
        return 0
    if args.suite:
        return run_suite(args)
    if not (args.test and args.target and args.task):
        parser.error("--train needs --test, --target and --task")
    return run_single(args)


if __name__ == "__main__":
    sys.exit(main())
