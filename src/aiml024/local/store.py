"""The embedded object store: what etcd and the API server do in a cluster, as files.

Layout under the state directory (`.aiml024/`, or `$AIML024_HOME`):
    objects/<plural>/<namespace>/<name>.json   every object, spec and status together
    events.jsonl                               Kubernetes-style events, newest last
Writes are atomic (temporary file, fsync, rename) under a lock, so a crash or a concurrent
command never leaves a half-written object. Like the API server, the store stamps uid,
resourceVersion, creationTimestamp, and bumps metadata.generation only when the spec changes.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..api import NAMES
from ..api.common import DEFAULT_NAMESPACE, dns_problem
from ..files import write_atomic

# What the background controller writes as the lock's owner, and how long commands wait for it.
CONTROLLER_OWNER = "aiml024 controller"
CONTROLLER_WAIT_S = 600.0


class StoreBusy(RuntimeError):
    """Another command holds the control plane (for example a running `aiml024 apply`)."""


class InvalidName(ValueError):
    """A name or namespace Kubernetes would refuse (and that could escape the state dir)."""


class NotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def state_home(cwd: Path | None = None) -> Path:
    env = os.environ.get("AIML024_HOME")
    return Path(env).resolve() if env else (cwd or Path.cwd()).resolve() / ".aiml024"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(kind: str) -> str:
    return NAMES[kind][0] if kind in NAMES else kind.lower() + "s"


class Store:
    def __init__(self, home: Path):
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(home / ".store.lock"), timeout=30)

    # -- objects ------------------------------------------------------------------------------

    def _path(self, kind: str, name: str, namespace: str) -> Path:
        # As the API server does: names and namespaces are DNS-1123, so no path can escape.
        for what, value in (("namespace", namespace), ("name", name)):
            problem = dns_problem(value, label=what == "namespace")
            if problem:
                raise InvalidName(f"metadata.{what}: {problem}")
        return self.home / "objects" / _plural(kind) / namespace / f"{name}.json"

    def get(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        path = self._path(kind, name, namespace)
        if not path.exists():
            raise NotFound(f'{_plural(kind)} "{name}" not found')
        return json.loads(path.read_text())

    def find(
        self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE
    ) -> dict[str, Any] | None:
        try:
            return self.get(kind, name, namespace)
        except NotFound:
            return None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        root = self.home / "objects" / _plural(kind)
        pattern = f"{namespace}/*.json" if namespace else "*/*.json"
        return [json.loads(p.read_text()) for p in sorted(root.glob(pattern))]

    def _next_version(self) -> str:
        counter = self.home / "resourceVersion"
        value = int(counter.read_text()) + 1 if counter.exists() else 1
        write_atomic(counter, str(value))
        return str(value)

    def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or update an object's spec, metadata labels and annotations.

        Returns the stored object and whether its generation changed (a new spec).
        Status is owned by the controllers and kept as it was.
        """
        meta = obj["metadata"]
        namespace = meta.get("namespace") or DEFAULT_NAMESPACE
        with self._lock:
            current = self.find(obj["kind"], meta["name"], namespace)
            if current is None:
                stored = {
                    **{k: v for k, v in obj.items() if k != "status"},
                    "metadata": {
                        **meta,
                        "namespace": namespace,
                        "uid": str(uuid.uuid4()),
                        "generation": 1,
                        "creationTimestamp": now_iso(),
                    },
                }
                changed = True
            else:
                changed = current.get("spec") != obj.get("spec")
                stored = {
                    **current,
                    "spec": obj.get("spec"),
                    "metadata": {
                        **current["metadata"],
                        "labels": meta.get("labels", {}),
                        "annotations": meta.get("annotations", {}),
                        "generation": current["metadata"]["generation"] + int(changed),
                    },
                }
            stored["metadata"]["resourceVersion"] = self._next_version()
            write_atomic(self._path(obj["kind"], meta["name"], namespace), _dump(stored))
            return stored, changed

    def update_status(
        self, kind: str, name: str, status: dict[str, Any], namespace: str = DEFAULT_NAMESPACE
    ) -> dict[str, Any]:
        """Replace an object's status (the status subresource)."""
        with self._lock:
            current = self.get(kind, name, namespace)
            current["status"] = status
            current["metadata"]["resourceVersion"] = self._next_version()
            write_atomic(self._path(kind, name, namespace), _dump(current))
            return current

    def delete(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        with self._lock:
            path = self._path(kind, name, namespace)
            existed = path.exists()
            path.unlink(missing_ok=True)
            return existed

    # -- events -------------------------------------------------------------------------------

    def record_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        event = {
            "involvedObject": {
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace", DEFAULT_NAMESPACE),
                "uid": obj["metadata"].get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "lastTimestamp": now_iso(),
        }
        path = self.home / "events.jsonl"
        with self._lock, path.open("a") as handle:
            if handle.tell() and not path.read_bytes().endswith(b"\n"):
                handle.write("\n")  # end a torn last line, so this event stays readable
            handle.write(json.dumps(event) + "\n")

    def events_for(self, kind: str, name: str, limit: int = 20) -> list[dict[str, Any]]:
        path = self.home / "events.jsonl"
        if not path.exists():
            return []
        events = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                if line.strip():
                    events.append(json.loads(line))
            except ValueError:
                # A torn line (a process killed mid-append) loses that one event, nothing more.
                warnings.warn(f"{path}:{number}: skipped an unreadable event line", stacklevel=2)
        events = [e for e in events if isinstance(e, dict) and "involvedObject" in e]
        mine = [
            e for e in events
            if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
        ]  # fmt: skip
        return mine[-limit:]

    # -- exclusive control ----------------------------------------------------------------------

    @contextmanager
    def exclusive(self, what: str, wait_for_controller: bool = True) -> Iterator[None]:
        """Hold the control plane for one long command; a second one fails at once, except
        that a command waits (up to CONTROLLER_WAIT_S) for a tick of the background
        controller (aiml024.local.controller), which is no one's command to wait for."""
        marker = self.home / "apply.owner"
        lock = FileLock(str(self.home / "apply.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            owner = marker.read_text().strip() if marker.exists() else "another command"
            if not (wait_for_controller and owner.startswith(CONTROLLER_OWNER)):
                raise StoreBusy(
                    f"another aiml024 command is running against {self.home} ({owner}); "
                    "wait for it to finish"
                ) from None
            try:
                lock.acquire(timeout=CONTROLLER_WAIT_S)
            except Timeout:
                raise StoreBusy(
                    f"the background controller is still busy against {self.home} ({owner}); "
                    "try again when it is done"
                ) from None
        try:
            write_atomic(marker, f"{what}, pid {os.getpid()}, since {now_iso()}")
            yield
        finally:
            marker.unlink(missing_ok=True)
            lock.release()


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"
