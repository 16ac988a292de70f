"""Explanations' share of the experiment's time budget, on the churn example (24,000 rows).

    .venv/bin/python bench/explain/run.py [--budget 60] [--rows 24000]

Trains the churn example (examples/churn/experiment.yaml, its own data) through the local
control plane in a temporary state directory, then reads the run's explanations.json: the
seconds spent on TreeSHAP, permutation importance, PDP/ICE and the example rows'
explanations and counterfactuals, against the whole run's wall time and timeBudgetSeconds
(both measured in the same run). Goal: explanations under 10 % of the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=60, help="timeBudgetSeconds")
    parser.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aiml024-bench-explain-"))
    try:
        example = home / "churn"
        shutil.copytree(REPO / "examples" / "churn", example)
        if args.rows:
            import pandas as pd

            data = example / "data" / "churn.csv.gz"
            pd.read_csv(data).head(args.rows).to_csv(data, index=False)
        spec_file = example / "experiment.yaml"
        doc = yaml.safe_load(spec_file.read_text())
        doc["spec"]["search"]["timeBudgetSeconds"] = args.budget
        spec_file.write_text(yaml.safe_dump(doc))
        env = {**os.environ, "AIML024_HOME": str(home / "state")}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "aiml024.cli.main", "apply", "-f", str(spec_file)],
            env=env, capture_output=True, text=True, cwd=home,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
            return 1
        # The registered copy under the artifact store (the run's step directory has another).
        [explanations] = (home / "state" / "artifacts").rglob("card/explanations.json")
        explained = json.loads(explanations.read_text())
        timings = explained["timings"]
        total = timings["totalSeconds"]
        print(f"rows: {args.rows or 'all (24000)'}, timeBudgetSeconds: {args.budget}")
        print("explanations: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        print(f"skipped: {explained.get('skipped') or 'nothing'}")
        print(f"run wall time (apply, all steps): {wall:.1f} s")
        print(f"explanations / timeBudgetSeconds: {total / args.budget:.1%} (goal < 10%)")
        print(f"explanations / run wall time: {total / wall:.1%}")
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
