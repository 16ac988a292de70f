"""The served requests' log: what each request sent and got back, and the outcomes fed back.

Layout under a URI root (any fsspec URL or path; aiml024.api.plan.request_log_root):

    <root>/requests/part-<yyyymmddThhmmssZ>-<pid>-<seq:06d>.jsonl   one line per request
    <root>/feedback/part-<yyyymmddThhmmssZ>-<pid>-<seq:06d>.jsonl   one line per outcome
    <root>/drift/latest.json                                         written by the monitor

A request line: {"id", "at", "deployment", "model", "sha256", "role", "endpoint", "instances",
"predictions", "latencyMs"}; a feedback line: {"id", "at", "deployment", "outcome"}.

`RequestLog` buffers records in memory and a background thread writes them (every second, at
500 records, and on close), so the serving hot path only appends to a list. Each part is
written under a dot-name and then renamed: readers never see half a part. The part's time is
when it was written, so every record in it is at or before that time (`read_records(since=)`
skips older parts by name).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ..servinglog import KINDS, STAMP

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_RECORDS = 500
# One sequence per process, shared by every log in it: part names never collide.
_SEQUENCE = itertools.count()
_SEQUENCE_LOCK = threading.Lock()


def new_id() -> str:
    """A request id: 32 hex digits."""
    return os.urandom(16).hex()


def iso(at: float) -> str:
    """A Unix time as ISO-8601 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def part_name(at: float, pid: int, seq: int) -> str:
    return f"part-{datetime.fromtimestamp(at, UTC).strftime(STAMP)}-{pid}-{seq:06d}.jsonl"


class RequestLog:
    """Buffered JSONL writer for one log root; `add` is cheap and thread-safe.

    A record's values may be zero-argument callables: they run on the writer thread, so the
    hot path hands over what it has (e.g. the V2 columns) and the conversion happens later.
    """

    def __init__(
        self,
        root: str,
        flush_seconds: float = FLUSH_SECONDS,
        flush_records: int = FLUSH_RECORDS,
    ):
        import fsspec

        self.root = root.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.root)
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self._buffers: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aiml024-request-log", daemon=True)
        self._thread.start()

    def add(self, kind: str, record: dict[str, Any]) -> None:
        with self._lock:
            buffer = self._buffers[kind]
            buffer.append(record)
            full = len(buffer) >= self.flush_records
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write what is buffered now (one part per kind)."""
        for kind in KINDS:
            with self._lock:
                records, self._buffers[kind] = self._buffers[kind], []
            if records:
                try:
                    self._write(kind, records)
                except Exception:  # a store outage must not stop serving; say so, drop the part
                    log.exception("request log: could not write %d %s records", len(records), kind)

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def _write(self, kind: str, records: list[dict[str, Any]]) -> None:
        lines = b"".join(orjson.dumps(_resolved(r), default=_jsonable,
                                      option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                         for r in records)  # fmt: skip
        with _SEQUENCE_LOCK:
            seq = next(_SEQUENCE)
        name = part_name(time.time(), os.getpid(), seq)
        directory = f"{self.path}/{kind}"
        self.fs.makedirs(directory, exist_ok=True)
        temporary, final = f"{directory}/.{name}.tmp", f"{directory}/{name}"
        self.fs.pipe_file(temporary, lines)
        self.fs.mv(temporary, final)


def _resolved(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v() if callable(v) else v) for k, v in record.items()}
    at = out.get("at")
    if isinstance(at, float):
        out["at"] = iso(at)
    return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars orjson does not take
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
