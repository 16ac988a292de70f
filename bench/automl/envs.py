"""The peers' virtualenvs under bench/.venvs/: FLAML, AutoGluon, and one that exports datasets.

Each peer gets its own venv because their pins conflict with aiml024's (and each other's):
FLAML needs xgboost < 3, AutoGluon 1.6 needs scikit-learn < 1.8 and a CPU torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
READY = ".bench-ready.json"  # written last: a venv without it is half-built and is rebuilt


@dataclass(frozen=True)
class EnvSpec:
    name: str
    # pip install invocations, in order; each is the argument list after `pip install`.
    installs: list[list[str]] = field(default_factory=list)


ENVS: dict[str, EnvSpec] = {
    "data": EnvSpec("data", [["-r", str(REQUIREMENTS / "data.txt")]]),
    "flaml": EnvSpec("flaml", [["-r", str(REQUIREMENTS / "flaml.txt")]]),
    "autogluon": EnvSpec("autogluon", [
        # torch first, pinned, so nothing later lets pip choose a (CUDA, multi-GB) newer one.
        ["torch==2.13.0"],
        ["-c", str(REQUIREMENTS / "autogluon-constraints.txt"),
         "-r", str(REQUIREMENTS / "autogluon.txt")],
    ]),
}


def env_dir(name: str) -> Path:
    return VENVS_DIR / name


def python_of(name: str) -> Path:
    return env_dir(name) / "bin" / "python"


def is_ready(name: str) -> bool:
    return (env_dir(name) / READY).is_file()


def env_info(name: str) -> dict[str, object]:
    """What setup recorded: seconds, size, and the installed versions (pip freeze)."""
    path = env_dir(name) / READY
    return json.loads(path.read_text()) if path.is_file() else {}


def _dir_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return round(total / 2**20, 1)


def _base_python() -> str:
    # The interpreter behind the running venv: peers get the same CPython as aiml024.
    return getattr(sys, "_base_executable", None) or sys.executable


def create(name: str, log: Path | None = None) -> dict[str, object]:
    """Create (or finish) the venv `name`; returns the setup record. Idempotent."""
    if is_ready(name):
        return env_info(name)
    spec = ENVS[name]
    directory = env_dir(name)
    started = time.monotonic()
    out = open(log, "a") if log else None  # closed below
    try:
        if not python_of(name).exists():
            subprocess.run([_base_python(), "-m", "venv", str(directory)], check=True)
        pip = [str(python_of(name)), "-m", "pip"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True,
                       stdout=out, stderr=out)
        for args in spec.installs:
            print(f"[setup {name}] pip install {' '.join(args)}", file=sys.stderr, flush=True)
            subprocess.run([*pip, "install", "--quiet", *args], check=True, stdout=out,
                           stderr=out)
        freeze = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True)
    finally:
        if out:
            out.close()
    record: dict[str, object] = {
        "name": name,
        "seconds": round(time.monotonic() - started, 1),
        "size_mb": _dir_mb(directory),
        "python": subprocess.run([str(python_of(name)), "-V"], capture_output=True,
                                 text=True).stdout.strip(),
        "packages": dict(
            line.split("==", 1) for line in freeze.stdout.splitlines() if "==" in line
        ),
    }
    (directory / READY).write_text(json.dumps(record, indent=2) + "\n")
    return record


def ensure(names: list[str]) -> dict[str, dict[str, object]]:
    return {name: create(name) for name in names}


if __name__ == "__main__":  # python -m bench.automl.envs NAME... (used by --setup)
    for env_name in sys.argv[1:] or list(ENVS):
        info = create(env_name)
        print(json.dumps({k: v for k, v in info.items() if k != "packages"}), flush=True)
