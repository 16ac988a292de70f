"""Operator throughput: N Experiments created against the API emulator; time to Workflow.

    .venv/bin/python bench/operator/run.py [--experiments 1000] [--concurrency 8]

Runs the real operator as its own process (`python -m aiml024.operator`, webhooks included)
against tests/integration/emulator, creates N Experiments as a user, and watches Workflows.
Prints p50/p95 of create -> Workflow created, the same for the API's own create latency
(the baseline, measured in the same run), their ratio, and the operator's peak RSS.
Goal: p95 under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.emulator import Client, Emulator  # noqa: E402
from tests.integration.emulator.harness import (  # noqa: E402
    OperatorProcess,
    free_port,
    operator_env,
    wire_webhooks,
)

from aiml024.api.common import EXPERIMENT_LABEL  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    manifest = yaml.safe_load((REPO / "examples" / "churn" / "experiment.yaml").read_text())
    manifest["spec"]["data"]["uri"] = "s3://data/churn.csv.gz"
    seen: dict[str, float] = {}
    with Emulator() as api, tempfile.TemporaryDirectory() as tmp:
        api.bind("default", "edit", user="alice")  # the emulator enforces RBAC
        port = free_port()
        wire_webhooks(api, port)
        operator = OperatorProcess(operator_env(api, port), Path(tmp) / "operator.log").start()
        time.sleep(1.0)  # let kopf list and start its watches

        def watch() -> None:
            url = f"{api.url}/apis/argoproj.io/v1alpha1/workflows"
            with httpx.stream(
                "GET",
                url,
                params={"watch": "true", "resourceVersion": str(api.rv)},
                headers={"Authorization": "Bearer admin"},
                timeout=None,
            ) as stream:
                for line in stream.iter_lines():
                    event = json.loads(line)
                    if event["type"] == "ADDED":
                        seen[event["object"]["metadata"]["labels"][EXPERIMENT_LABEL]] = (
                            time.perf_counter()
                        )

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(0.2)
        created: dict[str, tuple[float, float]] = {}  # name -> (sent, answered)
        local = threading.local()

        def create(i: int) -> None:
            if not hasattr(local, "client"):
                local.client = Client(api.url, "alice")
            doc = json.loads(json.dumps(manifest))
            doc["metadata"]["name"] = name = f"exp-{i:05d}"
            sent = time.perf_counter()
            local.client.create(doc)
            created[name] = (sent, time.perf_counter())

        started = time.perf_counter()
        peak = 0.0
        with ThreadPoolExecutor(args.concurrency) as pool:
            for _ in pool.map(create, range(args.experiments)):
                pass
        deadline = time.monotonic() + 120
        while len(seen) < args.experiments and time.monotonic() < deadline:
            peak = max(peak, rss_mb(operator.proc.pid)[0])  # type: ignore[union-attr]
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        rss, hwm = rss_mb(operator.proc.pid)  # type: ignore[union-attr]
        operator_cpu = cpu_seconds(operator.proc.pid)  # type: ignore[union-attr]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        emulator_cpu = usage.ru_utime + usage.ru_stime  # this process: emulator + clients
        operator.kill()

    to_workflow = [seen[n] - sent for n, (sent, _) in created.items() if n in seen]
    api_create = [answered - sent for sent, answered in created.values()]
    missing = args.experiments - len(to_workflow)
    p50, p95 = percentile(to_workflow, 0.5), percentile(to_workflow, 0.95)
    b50, b95 = percentile(api_create, 0.5), percentile(api_create, 0.95)
    print(
        f"experiments: {args.experiments} (concurrency {args.concurrency}), "
        f"workflows seen: {len(to_workflow)}, missing: {missing}, wall: {elapsed:.1f} s"
    )
    print(
        f"create -> Workflow created: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"mean {statistics.mean(to_workflow) * 1000:.0f} ms"
    )
    print(
        f"baseline, API create (incl. admission webhooks): p50 {b50 * 1000:.0f} ms, "
        f"p95 {b95 * 1000:.0f} ms"
    )
    print(f"ratio p95 / baseline p95: {p95 / b95:.1f}x")
    print(f"CPU: operator {operator_cpu:.1f} s, emulator + clients {emulator_cpu:.1f} s")
    print(f"operator RSS: {rss:.0f} MiB now, {hwm:.0f} MiB peak")
    print(f"goal p95 < 1 s: {'met' if p95 < 1 and not missing else 'NOT met'}")


if __name__ == "__main__":
    main()
