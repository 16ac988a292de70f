"""The embedded store behaves like the API server where users can tell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aiml024.files import write_atomic
from aiml024.local.store import InvalidName, NotFound, Store, StoreBusy


def experiment(trials: int = 5) -> dict:
    return {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "churn"},
        "spec": {"task": "classification", "target": "y", "search": {"trials": trials}},
    }


def test_create_stamps_metadata_like_the_api_server(tmp_path: Path) -> None:
    store = Store(tmp_path)
    stored, changed = store.apply(experiment())
    meta = stored["metadata"]
    assert changed and meta["generation"] == 1 and meta["namespace"] == "default"
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert store.get("Experiment", "churn") == stored


def test_generation_moves_only_when_the_spec_changes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, _ = store.apply(experiment())
    same, changed = store.apply(experiment())
    assert not changed and same["metadata"]["generation"] == 1
    assert same["metadata"]["uid"] == first["metadata"]["uid"]
    assert int(same["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    newer, changed = store.apply(experiment(trials=9))
    assert changed and newer["metadata"]["generation"] == 2


def test_apply_keeps_status_and_status_updates_keep_spec(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.apply(experiment())
    store.update_status("Experiment", "churn", {"phase": "Succeeded"})
    again, _ = store.apply({**experiment(), "status": {"phase": "Forged"}})
    assert again["status"] == {"phase": "Succeeded"}
    assert again["spec"]["search"]["trials"] == 5


def test_missing_object_says_what_was_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match='models "nope" not found'):
        Store(tmp_path).get("Model", "nope")


def test_a_second_exclusive_command_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.exclusive("aiml024 apply"):
        with pytest.raises(StoreBusy, match="aiml024 apply, pid"):
            with Store(tmp_path).exclusive("aiml024 apply"):
                pass
    with store.exclusive("aiml024 apply"):  # released afterwards
        pass


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "obj.json"
    write_atomic(target, json.dumps({"ok": 1}))

    with pytest.raises(TypeError):
        write_atomic(target, object())  # type: ignore[arg-type]
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["obj.json"]


def test_events_are_recorded_per_object(tmp_path: Path) -> None:
    store = Store(tmp_path)
    obj, _ = store.apply(experiment())
    store.record_event(obj, "Normal", "WorkflowCreated", "created workflow churn-g1")
    events = store.events_for("Experiment", "churn")
    assert [(e["reason"], e["message"]) for e in events] == [
        ("WorkflowCreated", "created workflow churn-g1")
    ]
    assert store.events_for("Model", "churn") == []


def test_state_home_honours_aiml024_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiml024.local.store import state_home

    monkeypatch.setenv("AIML024_HOME", str(tmp_path / "state"))
    assert state_home() == (tmp_path / "state").resolve()
    monkeypatch.delenv("AIML024_HOME")
    assert state_home(Path(os.sep) / "x") == Path("/x/.aiml024")


@pytest.mark.parametrize(
    ("field", "value"), [("namespace", "../../x"), ("namespace", "a/b"), ("name", "../x")]
)
def test_names_that_could_escape_the_state_directory_are_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    store = Store(tmp_path / "state")
    obj = experiment()
    obj["metadata"][field] = value
    with pytest.raises(InvalidName, match=f"metadata.{field}: '"):
        store.apply(obj)
    assert not (tmp_path / "x").exists() and not list((tmp_path / "state").rglob("*.json"))


def test_a_torn_last_event_line_loses_only_that_event(tmp_path: Path) -> None:
    store = Store(tmp_path)
    obj, _ = store.apply(experiment())
    store.record_event(obj, "Normal", "WorkflowCreated", "created workflow churn-g1")
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"involvedObject": {"kind": "Experi')  # killed mid-append
    with pytest.warns(UserWarning, match="skipped an unreadable event line"):
        assert [e["reason"] for e in store.events_for("Experiment", "churn")] == [
            "WorkflowCreated"
        ]
    store.record_event(obj, "Normal", "Training", "workflow churn-g1 is running")
    with pytest.warns(UserWarning):
        reasons = [e["reason"] for e in store.events_for("Experiment", "churn")]
    assert reasons == ["WorkflowCreated", "Training"]
