"""The request log: buffered JSONL parts under a URI root, read back in order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aiml024.runtime.requestlog import RequestLog, new_id, read_records


def test_records_are_written_in_whole_parts_and_read_back(tmp_path: Path) -> None:
    log = RequestLog(str(tmp_path), flush_seconds=60, flush_records=2)
    first = {"id": new_id(), "at": time.time(), "instances": [{"x": 1}],
             "predictions": lambda: [{"label": "a", "score": np.float64(0.5)}]}  # fmt: skip
    log.add("requests", first)
    log.add("requests", {"id": new_id(), "at": time.time(), "instances": []})  # full: written
    log.add("feedback", {"id": first["id"], "at": time.time(), "outcome": True})
    log.close()  # the rest

    parts = sorted(p.name for p in (tmp_path / "requests").iterdir())
    assert len(parts) == 1 and parts[0].startswith("part-") and parts[0].endswith("-000000.jsonl")
    records = list(read_records(str(tmp_path)))
    assert [r["id"] for r in records][0] == first["id"] and len(records[0]["id"]) == 32
    assert records[0]["predictions"] == [{"label": "a", "score": 0.5}]
    assert records[0]["at"].endswith("Z")
    [outcome] = read_records(str(tmp_path), "feedback")
    assert outcome["outcome"] is True
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert list(read_records(str(tmp_path), since=later)) == []
    assert list(read_records(str(tmp_path / "absent"))) == []
    with pytest.raises(ValueError):
        list(read_records(str(tmp_path), "nope"))


def test_any_fsspec_root(tmp_path: Path) -> None:
    log = RequestLog("memory://serving/churn/", flush_seconds=0.05)
    log.add("requests", {"id": "a" * 32, "at": time.time()})
    time.sleep(0.3)  # the writer thread's periodic flush
    assert [r["id"] for r in read_records("memory://serving/churn")] == ["a" * 32]
    log.close()
