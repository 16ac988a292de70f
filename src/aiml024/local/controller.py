"""The embedded control plane's background loop: what the operator's timers do in a cluster.

`aiml024 apply` starts `aiml024 controller run` detached (its own session, like the model
servers) when a Deployment needs watching: drift monitors on a schedule, or a rollout whose
steps wait for time and traffic. It ticks every `interval` seconds
(LocalControlPlane.tick: SLO windows, rollout steps, due monitors, retraining) and exits on its
own once nothing needs it; `aiml024 delete` of the last such Deployment stops it too.

`AIML024_CONTROLLER=off` keeps apply from starting it (tests drive `aiml024 controller run
--once` themselves, for reproducible timing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from ..files import write_atomic
from .server import stop_process_group

CONTROLLER_FILE = "controller.json"
CONTROLLER_ENV = "AIML024_CONTROLLER"
DEFAULT_INTERVAL_S = 15.0


class ControllerInfo(BaseModel):
    pid: int
    interval: float
    log: str
    started: float


def controller_file(home: Path) -> Path:
    return home / CONTROLLER_FILE


def read_controller(home: Path) -> ControllerInfo | None:
    path = controller_file(home)
    if not path.exists():
        return None
    try:
        return ControllerInfo.model_validate_json(path.read_text())
    except ValueError:
        return None


def controller_alive(home: Path) -> bool:
    info = read_controller(home)
    if info is None:
        return False
    _reap(info.pid)
    try:
        os.kill(info.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start_controller(home: Path, interval: float = DEFAULT_INTERVAL_S) -> ControllerInfo | None:
    """Start the loop unless it runs already or AIML024_CONTROLLER=off; None when not started."""
    if os.environ.get(CONTROLLER_ENV, "").lower() == "off" or controller_alive(home):
        return None
    log = home / "controller.log"
    aiml024 = Path(sys.executable).with_name("aiml024")
    command = (
        [str(aiml024)] if aiml024.exists() else [sys.executable, "-m", "aiml024.cli.main"]
    ) + ["controller", "run", "--interval", str(interval)]
    env = dict(os.environ, AIML024_HOME=str(home))
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the CLI that started it
        )
    info = ControllerInfo(pid=process.pid, interval=interval, log=str(log), started=time.time())
    write_atomic(controller_file(home), info.model_dump_json(indent=2))
    return info


def stop_controller(home: Path, timeout: float = 10.0) -> None:
    """Stop the loop (SIGTERM, then SIGKILL); safe when none runs."""
    info = read_controller(home)
    controller_file(home).unlink(missing_ok=True)
    if info is None or info.pid == os.getpid():
        return
    stop_process_group(info.pid, timeout)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
