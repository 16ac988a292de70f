"""Live progress for `aiml024 apply`: workflow steps, trials and the best score so far."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ..local.controlplane import Progress as Callbacks


class ApplyProgress:
    def __init__(self, console: Console):
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.steps: dict[tuple[str, str], TaskID] = {}
        self.trials: dict[str, TaskID] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.phases: dict[tuple[str, str], str] = {}

    def __enter__(self) -> ApplyProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)

    def callbacks(self) -> Callbacks:
        return Callbacks(step=self._step, trial=self._trial, message=self._message)

    def _step(self, experiment: str, task: str, phase: str) -> None:
        key = (experiment, task)
        if self.phases.get(key) == phase or phase == "Pending":
            return
        self.phases[key] = phase
        if key not in self.steps:
            self.steps[key] = self.bars.add_task(f"{experiment} {task}", total=1, detail=phase)
        self.bars.update(self.steps[key], detail=phase, completed=1 if phase == "Succeeded" else 0)

    def _trial(self, experiment: str, event: dict[str, Any]) -> None:
        if experiment not in self.trials:
            self.trials[experiment] = self.bars.add_task(
                f"{experiment} trials", total=event.get("total"), detail=""
            )
        counts = self.counts.setdefault(experiment, {})
        state = event.get("state", "complete")
        counts[state] = counts.get(state, 0) + 1
        best = event.get("best")
        detail = f"best {best:.4f}" if isinstance(best, int | float) else ""
        if counts.get("pruned"):
            detail += f", {counts['pruned']} pruned"
        if event.get("learner"):
            detail += f" (last: {event['learner']})"
        self.bars.update(self.trials[experiment], completed=sum(counts.values()), detail=detail)

    def _message(self, text: str) -> None:
        self.bars.console.print(text)
