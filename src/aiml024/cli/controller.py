"""`aiml024 controller run` and `aiml024 monitor run`: the embedded control plane between
applies (aiml024.local.controller, aiml024.local.watch)."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from ..api import SpecError, kind_for
from ..local.store import NotFound, StoreBusy, state_home

console = Console(width=None if sys.stdout.isatty() else 400)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

controller_app = typer.Typer(no_args_is_help=True)
monitor_app = typer.Typer(no_args_is_help=True)


def _plane() -> Any:
    from ..local.controlplane import LocalControlPlane

    return LocalControlPlane(state_home())


def _say(text: str) -> None:
    console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, soft_wrap=True)


@controller_app.command("run")
def run(
    once: Annotated[bool, typer.Option("--once", help="One look at everything, then exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=1.0)] = 15.0,
) -> None:
    """Watch the Deployments: SLO windows, rollout steps, A/B tests, drift monitors on their
    schedules and the retraining they start. `aiml024 apply` starts this in the background
    when a Deployment needs it; it exits once none does."""
    from ..local.controller import controller_file
    from ..local.controlplane import ApplyError

    plane = _plane()
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            needed = plane.tick(say=_say)
        except StoreBusy:
            needed = True  # a user's command holds the store: look again next time
        except ApplyError as error:
            errors.print(f"error: {error}", highlight=False, soft_wrap=True)
            needed = True
        if once:
            return
        if not needed or stopping:
            controller_file(plane.home).unlink(missing_ok=True)
            _say("nothing to watch: the controller stops")
            return
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.2)


@monitor_app.command("run")
def monitor_run(ref: Annotated[str, typer.Argument(help="deployment/NAME")]) -> None:
    """Run a Deployment's drift monitors now, whatever their schedule: the report, the
    alert, the retraining a drifted `action: retrain` monitor starts."""
    from ..local.controlplane import ApplyError

    try:
        kind, _, name = ref.partition("/")
        if kind_for(kind) != "Deployment" or not name:
            raise SpecError(ref, ["monitor run takes deployment/NAME"])
        report = _plane().run_monitors(name, say=_say)
    except (SpecError, NotFound, StoreBusy, ApplyError) as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if any(r.drifted for r in report.reports):
        raise typer.Exit(3)  # like a failed check: scripts can tell drift from no drift
