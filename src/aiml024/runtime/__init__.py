"""What runs inside workflow steps and model servers: AutoML steps, bundles, serving.

Kept import-light: the heavy ML libraries load only in the modules that need them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

_event_stream: TextIO | None = None
_process_started: float | None = None


def process_started() -> float:
    """When this process started, on the time.monotonic() clock (from /proc/self/stat; else
    the first import of this package). Steps run by `python -m aiml024.runtime` count their
    time budget from here, so the interpreter's start and the imports count too."""
    global _process_started
    if _process_started is None:
        _process_started = time.monotonic()
        try:
            fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
            ticks = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, since boot
            age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks
            if 0.0 <= age < 60.0:  # plausible: not a clock mismatch
                _process_started -= age
        except (OSError, ValueError, IndexError, AttributeError):
            pass
    return _process_started


_step_clock: float | None = None


def set_step_clock(started: float | None) -> None:
    """The moment a step's time budget starts (the dispatcher passes the process start)."""
    global _step_clock
    _step_clock = started


def step_clock() -> float:
    """The step's start on the time.monotonic() clock: the dispatcher's, else now."""
    return time.monotonic() if _step_clock is None else _step_clock


def set_event_stream(stream: TextIO | None) -> None:
    """Send progress events to `stream` (None: the current sys.stdout)."""
    global _event_stream
    _event_stream = stream


def emit_event(event: dict[str, Any]) -> None:
    """Write one progress event as a JSON line (the workflow's log shows it verbatim)."""
    stream = _event_stream or sys.stdout
    stream.write(json.dumps(event, separators=(",", ":")) + "\n")
    stream.flush()
    if event.get("event") == "trial" and event.get("total"):
        report_progress(int(event.get("number", 0)) + 1, int(event["total"]))


def report_progress(done: int, total: int) -> None:
    """Argo's self-reported progress: "N/M" in $ARGO_PROGRESS_FILE becomes the node's progress."""
    path = os.environ.get("ARGO_PROGRESS_FILE")
    if not path:
        return
    try:
        with open(path, "w") as handle:
            handle.write(f"{min(done, total)}/{total}\n")
    except OSError:  # progress is best effort; the step's result is what counts
        pass


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)
