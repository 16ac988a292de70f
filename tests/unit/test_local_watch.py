"""The background controller's tick: one Deployment's failure does not stop the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiml024.local import watch
from aiml024.local.controlplane import LocalControlPlane


def test_a_failing_deployment_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = LocalControlPlane(tmp_path)
    for name in ("broken", "fine"):
        plane.store.apply({
            "apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
            "metadata": {"name": name}, "spec": {"model": "m-v1"},
        })  # fmt: skip
    looked: list[str] = []

    def look(_plane: Any, name: str, _now: Any, **_: Any) -> None:
        if name == "broken":
            raise OSError("the store went away")
        looked.append(name)

    monkeypatch.setattr(watch, "watch", look)
    said: list[str] = []
    plane.tick(say=said.append)
    assert looked == ["fine"]
    assert said == ["deployment broken: OSError: the store went away"]
    events = plane.store.events_for("Deployment", "broken")
    assert [e["reason"] for e in events] == ["WatchFailed"]
