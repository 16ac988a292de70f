"""On one machine the author of an Experiment is who first applied it, as a webhook would stamp."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiml024.api import parse_object
from aiml024.local.controlplane import ApplyError, LocalControlPlane, Progress


def forecasting(claimed_author: str):
    # An unsupported task stops at compile time, after the object is stored: no training needed.
    return parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "sales", "annotations": {"aiml024.io/applied-by": claimed_author}},
        "spec": {"task": "forecasting", "data": {"uri": "file:///x.csv"}, "target": "y"},
    })  # fmt: skip


def test_a_claimed_author_is_replaced_and_the_first_author_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = LocalControlPlane(tmp_path)
    monkeypatch.setenv("AIML024_USER", "alice")
    with pytest.raises(ApplyError, match="spec.task"):
        plane.apply([forecasting("mallory")], Progress())
    stored = plane.store.get("Experiment", "sales")
    assert stored["metadata"]["annotations"]["aiml024.io/applied-by"] == "alice"
    assert stored["status"]["conditions"][-1]["reason"] == "InvalidSpec"

    monkeypatch.setenv("AIML024_USER", "bob")
    with pytest.raises(ApplyError):
        plane.apply([forecasting("bob")], Progress())
    assert (
        plane.store.get("Experiment", "sales")["metadata"]["annotations"]["aiml024.io/applied-by"]
        == "alice"
    )
