"""Reading back what serving and monitoring write under a Deployment's monitor root
(`aiml024.api.monitoring.monitor_root`): the request and feedback logs the model servers
write (aiml024.runtime.requestlog), and the drift reports the monitors write
(aiml024.runtime.monitor). One reader for every side: the monitors and the embedded control
plane, and the operator, which carries no ML (so: json and fsspec only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fsspec

from .api.monitoring import DRIFT, FEEDBACK, REQUESTS, DriftReport

KINDS = (REQUESTS, FEEDBACK)
STAMP = "%Y%m%dT%H%M%SZ"  # part and report names: when they were written (UTC)


def read_records(
    root: str, kind: str = REQUESTS, since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The records under `root` of `kind` ("requests" or "feedback"), part by part in name
    (time) order, in any folder below it; with `since` (aware, or naive UTC), only records at
    or after it. A line that is not a JSON object is skipped."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    fs, path = fsspec.core.url_to_fs(root.rstrip("/"))
    try:
        parts = sorted(
            (p.rsplit("/", 1)[-1], p) for p in fs.find(f"{path}/{kind}")
            if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".jsonl")
        )  # fmt: skip
    except FileNotFoundError:
        return
    cutoff = None
    if since is not None:
        cutoff = since if since.tzinfo else since.replace(tzinfo=UTC)
    for name, part in parts:
        if cutoff is not None and _part_time(name) < cutoff.replace(microsecond=0):
            continue  # written before `since`: every record in it is older
        for line in fs.cat_file(part).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # blank, or not ours to read
            if not isinstance(record, dict):
                continue
            if cutoff is not None and _record_time(record) < cutoff:
                continue
            yield record


def newest_report(root: str, monitor: str) -> tuple[str, DriftReport] | None:
    """(its URI, the report) of the monitor's newest report under `root`, if any. Reports are
    named by their `until` (yyyymmddThhmmssZ), so the last name is the newest."""
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{DRIFT}/{monitor}")
    if not fs.exists(base):
        return None
    names = sorted(fs.glob(f"{base}/*.json"))
    if not names:
        return None
    with fs.open(names[-1], "rt", encoding="utf-8") as handle:
        report = DriftReport.model_validate_json(handle.read())
    scheme = root.split("://", 1)[0] + "://" if "://" in root else ""
    return scheme + names[-1], report


def _part_time(name: str) -> datetime:
    try:
        return datetime.strptime(name.split("-")[1], STAMP).replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # a name we did not write: read it


def _record_time(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(record["at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
