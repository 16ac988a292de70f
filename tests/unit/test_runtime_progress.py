"""Trial events also feed Argo's self-reported progress, which the operator mirrors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aiml024.runtime import emit_event, set_event_stream


def test_trial_events_write_argo_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    progress = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress))
    stream = io.StringIO()
    set_event_stream(stream)
    try:
        emit_event({"event": "trial", "number": 6, "total": 40, "best": 0.86})
    finally:
        set_event_stream(None)
    assert progress.read_text() == "7/40\n"
    assert json.loads(stream.getvalue())["best"] == 0.86


def test_without_argo_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGO_PROGRESS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    set_event_stream(io.StringIO())
    try:
        emit_event({"event": "trial", "number": 0, "total": 3})
    finally:
        set_event_stream(None)
    assert list(tmp_path.iterdir()) == []
