"""Serving throughput and latency: aiml024's runtime against MLServer's own LightGBM runtime.

    .venv/bin/python bench/serving/run.py [--seconds 10] [--rate 1000] [--batch-rows 100000]

Same run, same machine, loopback:
- trains a churn bundle like the demo's (examples/churn/data/churn.csv.gz: PII masked, dates,
  TF-IDF text, a LightGBM + XGBoost ensemble; cached in bench/serving/.cache/) and serves it with
  aiml024.local.server (MLServer 1.7.1, parallel_workers 0, our runtime) on the product route;
- trains a LightGBM booster on the same table's numeric columns and serves it with
  mlserver-lightgbm==1.7.1 from its own virtualenv (bench/serving/.venv-peer, made on first
  use), parallel_workers 0, over V2;
- drives both with wrk (apt-get install wrk) at 1 and 16 connections, single-row requests, and
  with a paced asyncio client at a fixed rate (p95 at ~1,000 req/s, latency counted from each
  request's scheduled time, so a stall is not hidden);
- scores 100k rows in-process through the compiled fast path (rows/s), and Bundle.predict.
Prints a table with ratios against the peer and writes it to bench/serving/last-run.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1].parent
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PEER_VENV = HERE / ".venv-peer"
DATA = REPO / "examples" / "churn" / "data" / "churn.csv.gz"
TYPES = {
    "signup_date": "datetime", "last_active": "datetime", "tenure_months": "numeric",
    "monthly_charges": "numeric", "total_charges": "numeric", "support_calls_90d": "numeric",
    "data_usage_gb": "numeric", "contract": "categorical", "payment_method": "categorical",
    "internet_service": "categorical", "region": "categorical", "senior": "boolean",
    "num_products": "numeric", "email": "categorical", "phone": "categorical",
    "last_message": "text",
}  # fmt: skip
NUMERIC = [c for c, t in TYPES.items() if t == "numeric"]
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY_FILE")):read("*a")
done = function(summary, latency, requests)
  for _, p in pairs({50, 95, 99}) do
    io.write(string.format("pct %d %d\\n", p, latency:percentile(p)))
  end
end
"""


def churn_bundle(rows: int) -> Path:
    """A bundle like the churn demo's evaluate step saves (cached by row count)."""
    from sklearn.pipeline import Pipeline

    from aiml024.runtime.bundle import Bundle, BundleMeta, InputColumn, save_bundle
    from aiml024.runtime.features import Featurizer
    from aiml024.runtime.learners import EnsembleEstimator
    from aiml024.runtime.pii import PiiMasker

    directory = CACHE / f"churn-bundle-{rows}"
    if (directory / "bundle.json").is_file():
        return directory
    table = pd.read_csv(DATA).head(rows)
    columns = [InputColumn(name=c, dtype=t) for c, t in TYPES.items()]  # type: ignore[arg-type]
    meta = BundleMeta(task="classification", target="churned", id_column="customer_id",
                      columns=columns, classes=[0, 1], learner="ensemble")  # fmt: skip
    X = Bundle(None, meta).frame(table.drop(columns=["churned", "customer_id"]))
    members = [
        ("lightgbm", {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20}, 300),
        ("xgboost", {"learning_rate": 0.05, "max_depth": 6}, 300),
    ]
    pipeline = Pipeline([
        ("pii", PiiMasker(columns={"email": "email", "phone": "phone", "last_message": "text"})),
        ("features", Featurizer(types=TYPES, text_columns=["last_message"])),
        ("model", EnsembleEstimator(members, [0.5, 0.5], "classification", [0, 1], n_jobs=2)),
    ]).fit(X, table["churned"].to_numpy())  # fmt: skip
    save_bundle(directory, pipeline, meta)
    return directory


def peer_model(rows: int) -> Path:
    """A LightGBM booster on the numeric columns, as mlserver-lightgbm loads it."""
    import lightgbm

    path = CACHE / f"peer-lightgbm-{rows}.txt"
    if not path.is_file():
        table = pd.read_csv(DATA).head(rows)
        data = lightgbm.Dataset(table[NUMERIC].to_numpy(float), table["churned"].to_numpy())
        params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 2}
        lightgbm.train(params, data, num_boost_round=300).save_model(str(path))
    return path


def peer_venv() -> Path:
    mlserver = PEER_VENV / "bin" / "mlserver"
    if not mlserver.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.1",
                        "mlserver-lightgbm==1.7.1", "uvloop==0.21.0"], check=True)  # fmt: skip
    return mlserver


def start_peer(model: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    from aiml024.local.server import _free_port

    repo = workdir / "repo"
    (repo / "peer").mkdir(parents=True)
    port = _free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": _free_port(),
                "metrics_port": _free_port(), "parallel_workers": 0}  # fmt: skip
    (repo / "settings.json").write_text(json.dumps(settings))
    (repo / "peer" / "model-settings.json").write_text(json.dumps({
        "name": "peer", "implementation": "mlserver_lightgbm.LightGBMModel",
        "parameters": {"uri": str(model)},
    }))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (workdir / "peer.log").open("wb")
    process = subprocess.Popen([str(peer_venv()), "start", str(repo)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/models/peer/ready").status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"peer did not start: {(workdir / 'peer.log').read_text()[-2000:]}")


def wrk(url: str, body: bytes, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    script, body_file = workdir / "post.lua", workdir / f"body-{abs(hash(url))}.json"
    script.write_text(LUA)
    body_file.write_bytes(body)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        env={**os.environ, "BODY_FILE": str(body_file)}, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, micros in re.findall(r"pct (\d+) (\d+)", out):
        result[f"p{pct}"] = int(micros) / 1000.0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


async def paced(url: str, body: bytes, rate: float, seconds: float, conns: int = 32) -> dict:
    """Open-loop load at `rate` req/s over keep-alive connections; latency from schedule."""
    host, port_path = url.removeprefix("http://").split(":", 1)
    port, path = port_path.split("/", 1)
    request = (f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    slots = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        for i in slots:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    achieved = len(latencies) / (time.perf_counter() - start)
    ms = np.asarray(latencies) * 1000
    return {"rps": achieved, "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99)),
            "errors": float(errors)}  # fmt: skip


def batch(bundle_dir: Path, rows: int) -> dict[str, float]:
    from aiml024.runtime.bundle import load_bundle
    from aiml024.runtime.fastpath import compile_bundle

    bundle = load_bundle(bundle_dir)
    fast = compile_bundle(bundle)
    table = pd.read_csv(DATA)
    table = pd.concat([table] * (rows // len(table) + 1)).head(rows).reset_index(drop=True)
    columns: dict[str, Any] = {}
    for name in TYPES:
        values = table[name]
        columns[name] = (values.to_numpy(float) if TYPES[name] == "numeric"
                         else values.astype(object).where(values.notna(), None).tolist())  # fmt: skip
    started = time.perf_counter()
    fast.predict_columns(columns, rows)
    fast_s = time.perf_counter() - started
    sample = table.head(20000)
    started = time.perf_counter()
    bundle.predict(sample.drop(columns=["churned"]))
    slow_s = (time.perf_counter() - started) * rows / len(sample)
    return {"fast_rows_s": rows / fast_s, "bundle_rows_s": rows / slow_s}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--train-rows", type=int, default=24_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk")
        return 1
    from aiml024.api.plan import Predictor, PredictorPlan, ServedModel
    from aiml024.local.server import start_server, stop_server
    from aiml024.runtime.bundle import bundle_digest

    CACHE.mkdir(exist_ok=True)
    bundle_dir = churn_bundle(args.train_rows)
    peer_file = peer_model(args.train_rows)
    first = pd.read_csv(DATA).head(1).drop(columns=["churned"]).to_dict(orient="records")[0]
    row = {k: (None if isinstance(v, float) and v != v else v) for k, v in first.items()}
    ours_body = json.dumps({"instances": [row]}).encode()
    values = [float(row[c]) for c in NUMERIC]
    peer_body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64",
                                        "shape": [1, len(values)], "data": values}]}).encode()  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="aiml024-bench-serving-"))
    plan = PredictorPlan("churn", (Predictor("stable", ServedModel(
        "churn", str(bundle_dir), bundle_digest(bundle_dir)), 100),))  # fmt: skip
    ours = start_server(plan, work / "ours", request_log=str(work / "log"))
    peer, peer_port = start_peer(peer_file, work / "peer")
    targets = {"aiml024": (ours.routes["churn"], ours_body),
               "mlserver-lightgbm": (f"http://127.0.0.1:{peer_port}/v2/models/peer/infer",
                                     peer_body)}  # fmt: skip
    results: dict[str, dict[str, Any]] = {name: {} for name in targets}
    try:
        for name, (url, body) in targets.items():
            wrk(url, body, 4, 2, work)  # warm up
            for conns in (1, 16):
                results[name][f"c{conns}"] = wrk(url, body, conns, args.seconds, work)
            results[name]["paced"] = asyncio.run(paced(url, body, args.rate, args.seconds))
    finally:
        stop_server(ours)
        os.killpg(peer.pid, 15)
        peer.wait(timeout=10)
    batch_result = batch(bundle_dir, args.batch_rows)
    report = render(results, batch_result, args)
    print(report)
    (HERE / "last-run.md").write_text(report)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def render(results: dict[str, dict[str, Any]], batched: dict[str, float], args: Any) -> str:
    ours, peer = results["aiml024"], results["mlserver-lightgbm"]
    lines = [
        f"single-row requests, loopback, {os.cpu_count()} cores, {args.seconds} s per cell",
        "",
        "| load | metric | aiml024 (product route) | mlserver-lightgbm (V2) | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (("c1", "wrk 1 conn"), ("c16", "wrk 16 conns"),
                       ("paced", f"paced {args.rate:.0f} req/s")):  # fmt: skip
        a, b = ours[key], peer[key]
        lines.append(f"| {label} | req/s | {a['rps']:.0f} | {b['rps']:.0f} | "
                     f"{a['rps'] / b['rps']:.2f}x |")  # fmt: skip
        for pct in ("p50", "p95", "p99"):
            if pct in a and pct in b:
                lines.append(f"| {label} | {pct} ms | {a[pct]:.2f} | {b[pct]:.2f} | "
                             f"{a[pct] / b[pct]:.2f}x |")  # fmt: skip
        lines.append(f"| {label} | errors | {a['errors']:.0f} | {b['errors']:.0f} | |")
    lines += [
        "",
        f"batch, in-process, {args.batch_rows} rows: fast path "
        f"{batched['fast_rows_s']:,.0f} rows/s; Bundle.predict {batched['bundle_rows_s']:,.0f} rows/s",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    sys.exit(main())
