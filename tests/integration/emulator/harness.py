"""Run the real operator against the emulator: in a thread (kopf.operator with stop/ready
flags) or as a process (`python -m aiml024.operator`, so it can be killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from aiml024.api.experiment import Trial
from aiml024.api.steps import REGISTRATION, LeaderboardRow, RegisterResult, SearchResult, run_root

from .client import Client
from .server import ADMIN, ARGO_USER, OPERATOR_USER, REPO, Emulator

WEBHOOKS = REPO / "manifests" / "webhooks.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def operator_env(api: Emulator, webhook_port: int, **extra: str) -> dict[str, str]:
    """The environment the operator reads (aiml024.operator.config) to reach the emulator."""
    return {
        "AIML024_KUBE_URL": api.url,
        "AIML024_KUBE_TOKEN": OPERATOR_USER,
        "AIML024_WEBHOOK_PORT": str(webhook_port),
        "AIML024_WEBHOOK_CERT_DIR": "/nonexistent",
        "AIML024_ARTIFACT_STORE": STORE.as_uri(),
        **extra,
    }


def wire_webhooks(api: Emulator, webhook_port: int) -> None:
    """Register manifests/webhooks.yaml with the emulator, the Service replaced by localhost."""
    for doc in yaml.safe_load_all(WEBHOOKS.read_text()):
        if doc:
            api.add_webhook_configuration(
                doc, lambda cc: f"http://127.0.0.1:{webhook_port}{cc['service']['path']}"
            )


class OperatorThread:
    """kopf.operator in its own event loop and thread, as `kopf run` would run it."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 30) -> OperatorThread:
        import kopf

        import aiml024.operator  # noqa: F401 - registers the handlers

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        clusterwide=True,
                        standalone=True,
                        stop_flag=self.stop_flag,
                        ready_flag=self.ready_flag,
                        memo=kopf.Memo(),
                    )
                )
            except BaseException as error:  # noqa: BLE001 - reported to the test
                self.error = error
                self.ready_flag.set()

        self.thread = threading.Thread(target=run, name="aiml024-operator", daemon=True)
        self.thread.start()
        if not self.ready_flag.wait(timeout) or self.error is not None:
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        wait_for_port(int(os.environ["AIML024_WEBHOOK_PORT"]))
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(30)


class OperatorProcess:
    """`python -m aiml024.operator` as a child process: killable with SIGKILL mid-run."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        handle = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiml024.operator", "--liveness", ""],
            env={**os.environ, **self.env, "PYTHONPATH": str(REPO / "src")},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(int(self.env["AIML024_WEBHOOK_PORT"]), timeout=60)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# --- what Argo and the runtime would report ------------------------------------------------

SHA = "9f2c4e7a1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"


def register_result(
    experiment: str,
    workflow: str,
    model: str = "churn-model",
    auc: float = 0.86,
    sha: str = SHA,
    root: str = "s3://aiml024-artifacts/elsewhere",
) -> dict[str, Any]:
    """The register step's result.json: the Model manifest with its evidence in status;
    `root` is the run's own root in the artifact store (aiml024.api.steps.run_root)."""
    artifact = f"{root}/bundle"
    manifest = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": model, "labels": {"team": "retention"}},
        "spec": {
            "source": {"experiment": experiment, "trial": 17, "workflow": workflow},
            "task": "classification",
            "stage": "staging",
            "description": "LightGBM + XGBoost ensemble for churn",
        },
        "status": {
            "artifactUri": artifact,
            "sha256": sha,
            "metrics": {"auc": auc, "f1": 0.71, "logloss": 0.38},
            "baselineMetrics": {"auc": 0.5, "f1": 0.0, "logloss": 0.69},
            "primaryMetric": "auc",
            "evidence": {
                "modelCardUri": f"{root}/card/model_card.md",
                "modelCardComplete": True,
                "piiColumns": ["email"],
                "piiAction": "mask",
                "fairness": {
                    "gender.demographic_parity_difference": 0.03,
                    "gender.equalized_odds_difference": 0.05,
                },
                "sensitiveAttributes": ["gender"],
                "calibration": {"ece": 0.021, "brier": 0.14},
            },
            "leaderboard": [
                {
                    "rank": 1,
                    "name": "ensemble",
                    "value": auc,
                    "members": ["lightgbm#17", "xgboost#9"],
                }
            ],
            "stage": "none",
            "lineage": {
                "datasetUri": "s3://data/churn.csv.gz",
                "datasetFingerprint": "sha256:1f0e",
                "specHash": "sha256:77ab",
                "codeVersion": "0.1.0",
                "experiment": experiment,
                "workflow": workflow,
                "seed": 42,
            },
        },
    }
    return RegisterResult(
        model=manifest, artifact_uri=artifact, model_card_uri=f"{root}/card/model_card.md"
    ).wire()


# The artifact store the operator reads run records from (AIML024_ARTIFACT_STORE), shared by
# the tests of one process as a bucket is shared by a cluster's namespaces.
STORE = Path(tempfile.mkdtemp(prefix="aiml024-store-"))


def write_registration(
    namespace: str, experiment: str, uid: str, workflow: str, **register: Any
) -> dict[str, Any]:
    """What the register step leaves in the store: the run's record under its own root."""
    root = run_root(STORE.as_uri(), namespace, experiment, uid, workflow)
    record = register_result(experiment, workflow, root=root, **register)
    path = Path(root.removeprefix("file://")) / REGISTRATION
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def run_succeeds(
    api: Emulator, namespace: str, experiment: str, workflow: str, **register: Any
) -> None:
    """Argo and the runtime finish a run: the register step writes its record into the store,
    then Argo's controller records the Workflow as Succeeded."""
    uid = Client(api.url, ADMIN, namespace).get("Experiment", experiment)["metadata"]["uid"]
    write_registration(namespace, experiment, uid, workflow, **register)
    Client(api.url, ARGO_USER, namespace).patch(
        "Workflow",
        workflow,
        {"status": workflow_status(workflow, "Succeeded", experiment, **register)},
    )


def search_result(trials: int) -> dict[str, Any]:
    best = Trial(
        number=17, learner="lightgbm", value=0.86, params={"num_leaves": 31, "learning_rate": 0.05}
    )
    return SearchResult(
        trials_completed=trials,
        trials_total=trials,
        metric="maximize_auc",
        best_value=0.86,
        best_trial=best,
        elapsed_seconds=58.2,
        train_rows=4000,
        holdout_rows=1000,
        leaderboard=[
            LeaderboardRow(
                rank=1,
                name="lightgbm",
                learner="lightgbm",
                value=0.86,
                trial=17,
                params=best.params,
            ),
            LeaderboardRow(rank=2, name="xgboost", learner="xgboost", value=0.84, trial=9),
        ],
    ).wire()


def _node(
    workflow: str,
    task: str,
    phase: str,
    result: dict[str, Any] | None = None,
    progress: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": f"{workflow}-{abs(hash(task)) % 10**9}",
        "name": f"{workflow}.{task}",
        "displayName": task,
        "type": "Pod",
        "templateName": task,
        "phase": phase,
        "boundaryID": workflow,
        "startedAt": "2026-01-01T10:00:00Z",
    }
    if progress:
        node["progress"] = progress
    if message:
        node["message"] = message
    if phase in ("Succeeded", "Failed"):
        node["finishedAt"] = "2026-01-01T10:05:00Z"
    if result is not None:
        node["outputs"] = {
            "parameters": [{"name": "result", "value": json.dumps(result)}],
            "exitCode": "0",
        }
    return node


def workflow_status(
    workflow: str,
    phase: str,
    experiment: str = "churn",
    trials: int = 40,
    done: int = 0,
    failed_step: str | None = None,
    **register: Any,
) -> dict[str, Any]:
    """A Workflow status as Argo writes it: DAG node + pod nodes, outputs, progress."""
    nodes = {
        workflow: {
            "id": workflow,
            "name": workflow,
            "displayName": workflow,
            "type": "DAG",
            "templateName": "automl",
            "phase": phase,
            "startedAt": "2026-01-01T10:00:00Z",
        }
    }
    search = search_result(trials)
    steps: list[dict[str, Any]] = [_node(workflow, "ingest", "Succeeded", {"rows": 5000})]
    if failed_step:
        steps.append(_node(workflow, failed_step, "Failed", message="OOMKilled (exit code 137)"))
    elif phase == "Running":
        steps.append(_node(workflow, "search", "Running", progress=f"{done}/{trials}"))
    else:
        steps += [
            _node(workflow, "validate", "Succeeded", {"piiColumns": ["email"]}),
            _node(workflow, "search", "Succeeded", search, progress=f"{trials}/{trials}"),
            _node(workflow, "evaluate", "Succeeded", {"sha256": SHA}),
            _node(
                workflow, "register", "Succeeded", register_result(experiment, workflow, **register)
            ),
        ]
    for step in steps:
        nodes[step["id"]] = step
    status: dict[str, Any] = {
        "phase": phase,
        "startedAt": "2026-01-01T10:00:00Z",
        "nodes": nodes,
        "progress": f"{sum(s['phase'] == 'Succeeded' for s in steps)}/5",
    }
    if phase in ("Succeeded", "Failed"):
        status["finishedAt"] = "2026-01-01T10:20:00Z"
    if phase == "Failed":
        status["message"] = "child failed"
    return status
