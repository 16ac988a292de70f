"""Serve a local Deployment's predictor plan with a real MLServer process on 127.0.0.1.

`start_server` writes an MLServer model repository under `workdir`:

    workdir/repo/settings.json               host 127.0.0.1, free http/grpc/metrics ports, workers
    workdir/repo/<model>/model-settings.json implementation, bundle uri, version, extra
    workdir/server.log                       the server's stdout and stderr

and starts `mlserver start workdir/repo` detached in its own session (it outlives the CLI that
started it; `stop_server` ends its whole process group). Every predictor of the plan
(aiml024.api.plan.PredictorPlan) runs in the same MLServer, one model each. The plan's stable
predictor owns the product route `POST /v1/inference/<deployment>:predict`: its settings carry
the plan (aiml024.api.plan.RuntimeSettings), by which it splits the route over the live
predictors and copies it to the shadows (see aiml024.runtime.serving for how); each model also
answers V2 at `/v2/models/<model>/infer`.

`parallel_workers: 0` serves in the main process: on 2 cores it was ready in ~1.9 s against
~2.5 s with one worker process (which imports the ML stack again), and serves as well locally.
This module does not import the runtime (or pandas/scikit-learn): it only names its class.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from ..api.labels import short_digest
from ..api.plan import (
    DEPLOYMENT_ENV,
    REQUEST_LOG_ENV,
    RUNTIME_CLASS,
    SHA256_ENV,
    PredictorPlan,
    RuntimeSettings,
)

READY_TIMEOUT_S = 90.0
# The runtime's single-model settings in a cluster; they would apply to every model here.
_CLUSTER_ENV = {SHA256_ENV, DEPLOYMENT_ENV, REQUEST_LOG_ENV}
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception): ")


class ServerInfo(BaseModel):
    """What the control plane stores to reach and stop the server (JSON-serializable)."""

    name: str
    pid: int
    url: str
    http_port: int
    grpc_port: int
    metrics_port: int
    workdir: str
    log: str
    models: list[str]
    routes: dict[str, str] = Field(
        default_factory=dict, description="Deployment name -> its product endpoint URL."
    )
    # What it serves: the plan's split and digests (status may say what is planned already).
    traffic: dict[str, int] = Field(default_factory=dict)
    digests: dict[str, str] = Field(default_factory=dict)


class ServerStartError(RuntimeError):
    """MLServer did not become ready; the message ends with the last lines of server.log."""


def start_server(
    plan: PredictorPlan,
    workdir: Path,
    http_port: int | None = None,
    request_log: str | None = None,
) -> ServerInfo:
    """Start MLServer for every predictor of `plan` (each bundle at its artifact URI: a path,
    file:// or any fsspec URL) and wait until it and every model are ready. `request_log`: the
    URI root every model logs its requests under (aiml024.api.plan.request_log_root, i.e.
    <artifact store>/<namespace>/_serving/<deployment>/); None logs nothing."""
    name = plan.deployment
    if not plan.predictors:
        raise ValueError(f"server {name}: no predictors to serve")
    names = [p.model.name for p in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"server {name}: each predictor needs its own model, got {names}")
    workdir = Path(workdir).resolve()
    repo = workdir / "repo"
    http_port = http_port or _free_port()
    grpc_port, metrics_port = _free_port(), _free_port()
    _write_repository(repo, plan, http_port, grpc_port, metrics_port, request_log)

    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_ENV}  # settings say it all
    env["OMP_NUM_THREADS"] = "1"  # LightGBM/OpenMP oversubscribe the cores otherwise
    mlserver = Path(sys.executable).with_name("mlserver")
    command = [str(mlserver) if mlserver.exists() else "mlserver", "start", str(repo)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own group: stop kills workers too
        )
    url = f"http://127.0.0.1:{http_port}"
    info = ServerInfo(
        name=name,
        pid=process.pid,
        url=url,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        workdir=str(workdir),
        log=str(log_path),
        models=names,
        routes={name: f"{url}/v1/inference/{name}:predict"},
        traffic=plan.traffic(),
        digests=plan.digests(),
    )
    try:
        _wait_ready(info, process)
    except BaseException:  # not ready, or interrupted: leave no server behind
        stop_server(info)
        raise
    return info


def stop_server(info: ServerInfo, timeout: float = 10.0) -> None:
    """Terminate the server's process group; kill it if it lingers. Safe to call twice."""
    stop_process_group(info.pid, timeout)


def stop_process_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group `pid` leads (started with start_new_session), SIGKILL it if
    it lingers past `timeout`, and reap it. Safe to call twice."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:  # the pid was reused by someone else's process: not ours
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def server_alive(info: ServerInfo) -> bool:
    """True while the process runs and its REST port answers the liveness probe."""
    if not _group_alive(info.pid):
        return False
    try:
        return httpx.get(f"{info.url}/v2/health/live", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _write_repository(
    repo: Path,
    plan: PredictorPlan,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    request_log: str | None = None,
) -> None:
    shutil.rmtree(repo, ignore_errors=True)  # a model left from an earlier start would load too
    repo.mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    owner = plan.stable
    for predictor in plan:
        model = predictor.model
        runtime = (
            RuntimeSettings(model.sha256, plan.deployment, plan, request_log)
            if predictor is owner
            else RuntimeSettings(model.sha256, request_log=request_log)
        )
        model_settings = {
            "name": model.name,
            "implementation": RUNTIME_CLASS,
            "parameters": {
                "uri": model.artifact_uri,
                "version": short_digest(model.sha256) if model.sha256 else None,
                "extra": runtime.extra(),
            },
        }
        model_dir = repo / model.name
        model_dir.mkdir(parents=True)
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")


def _wait_ready(info: ServerInfo, process: subprocess.Popen[bytes]) -> None:
    probes = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in info.models)]
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=info.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # MLServer exits 0 when a model fails to load: the reason is in the log.
                raise ServerStartError(
                    f"MLServer for {info.name} stopped (exit code {process.returncode})"
                    f"{_reason(info)}{_log_tail(info)}"
                )
            try:
                if all(client.get(p).status_code == 200 for p in probes):
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
    raise ServerStartError(
        f"MLServer for {info.name} was not ready after {READY_TIMEOUT_S:.0f}s{_log_tail(info)}"
    )


def _reason(info: ServerInfo) -> str:
    """The last exception line of server.log, e.g. 'MLServerError: ... digest mismatch ...'."""
    try:
        lines = Path(info.log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return f": {errors[-1]}" if errors else ""


def _log_tail(info: ServerInfo, lines: int = 30) -> str:
    try:
        text = Path(info.log).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "; server.log ends with:\n" + "\n".join(text)


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (started by another process) or already reaped


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
