"""The request log: buffered JSONL parts under a URI root, read back in order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aiml024.runtime.requestlog import RequestLog, new_id
from aiml024.servinglog import read_records


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


# -- what the runtime logs of a request: input columns and the id, PII masked or dropped -------

ROWS = [
    {"customer_id": "c-1", "tenure": 2.0, "email": "Ann.Lee@Example.COM",
     "phone": "+1 415-555-0134", "churned": "yes", "notes": "mail ann.lee@example.com"},
    {"customer_id": "c-2", "tenure": None, "email": None, "phone": "415.555.0199"},
    {"customer_id": "c-3", "tenure": 40.0},
]  # fmt: skip
CLEAR = ("Ann.Lee", "ann.lee", "555-0134", "555.0199")


def _pii_bundle(directory: Path, action: str) -> str:
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import Pipeline

    from aiml024.runtime.bundle import Bundle, BundleMeta, InputColumn, save_bundle
    from aiml024.runtime.features import Featurizer
    from aiml024.runtime.learners import EnsembleEstimator
    from aiml024.runtime.pii import PiiMasker

    rng = np.random.default_rng(0)
    n = 120
    meta = BundleMeta(
        task="classification", target="churned", id_column="customer_id", classes=["no", "yes"],
        columns=[InputColumn(name="tenure", dtype="numeric"),
                 InputColumn(name="email", dtype="categorical"),
                 InputColumn(name="phone", dtype="categorical")],
        ignored_columns=["notes"],  # seen in training, not used: clients may still send it
    )  # fmt: skip
    raw = pd.DataFrame({
        "tenure": rng.integers(1, 60, n).astype(float),
        "email": [f"u{i}@{rng.choice(['gmail.com', 'corp.io'])}" for i in range(n)],
        "phone": [f"415-555-{i:04d}" for i in range(n)],
    })  # fmt: skip
    churn = np.where(raw["tenure"] < 20, "yes", "no")
    types = {"tenure": "numeric"} if action == "drop" else {
        "tenure": "numeric", "email": "categorical", "phone": "categorical"}  # fmt: skip
    pipeline = Pipeline([
        ("pii", PiiMasker(columns={"email": "email", "phone": "phone"}, action=action)),
        ("features", Featurizer(types=types)),
        ("model", EnsembleEstimator([("xgboost", {"max_depth": 2}, 5)], [1.0],
                                    "classification", ["no", "yes"])),
    ]).fit(Bundle(None, meta).frame(raw), churn)  # fmt: skip
    return save_bundle(directory, pipeline, meta)


@pytest.mark.parametrize("action", ["mask", "drop"])
def test_the_served_request_log_keeps_no_pii_in_clear_text(tmp_path: Path, action: str) -> None:
    """A bundle whose pipeline masks (or drops) email and phone, served in-process on the product
    route and over V2: the log holds the input columns and the id, masked as the model sees them,
    and none of the client's addresses or numbers (nor columns the model does not take)."""
    pytest.importorskip("mlserver")
    import asyncio

    import orjson
    from mlserver.settings import ModelSettings
    from mlserver.types import InferenceRequest

    from aiml024.runtime.serving import Aiml024Runtime

    sha = _pii_bundle(tmp_path / "bundle", action)
    log_root = str(tmp_path / "log")
    settings = ModelSettings(
        name="churn-pii", implementation=Aiml024Runtime,
        parameters={"uri": str(tmp_path / "bundle"),
                    "extra": {"sha256": sha, "deployment": "churn-pii", "request_log": log_root}},
    )  # fmt: skip
    runtime = Aiml024Runtime(settings)
    v2 = InferenceRequest(inputs=[
        {"name": "customer_id", "datatype": "BYTES", "shape": [1, 1], "data": ["c-9"]},
        {"name": "email", "datatype": "BYTES", "shape": [1, 1], "data": ["Ann.Lee@Example.COM"]},
    ])  # fmt: skip

    async def serve() -> None:
        await runtime.load()
        answer = await runtime._route(orjson.dumps({"instances": ROWS}))
        assert answer.status_code == 200
        await runtime.predict(v2)
        await runtime.unload()  # writes what the log holds

    asyncio.run(serve())

    text = "".join(p.read_text() for p in (Path(log_root) / "requests").glob("part-*.jsonl"))
    assert text and not any(clear in text for clear in CLEAR)
    rest, grpc = sorted(read_records(log_root), key=lambda r: r["endpoint"] != "rest")
    if action == "mask":
        assert rest["instances"] == [
            {"customer_id": "c-1", "tenure": 2.0, "email": "<email>@example.com",
             "phone": "<phone>"},
            {"customer_id": "c-2", "tenure": None, "email": None, "phone": "<phone>"},
            {"customer_id": "c-3", "tenure": 40.0},
        ]  # fmt: skip
        assert grpc["instances"] == [{"customer_id": "c-9", "email": "<email>@example.com"}]
    else:
        assert rest["instances"] == [
            {"customer_id": "c-1", "tenure": 2.0},
            {"customer_id": "c-2", "tenure": None},
            {"customer_id": "c-3", "tenure": 40.0},
        ]
        assert grpc["instances"] == [{"customer_id": "c-9"}]
    assert [p["label"] for p in rest["predictions"]][0] in ("yes", "no")


def test_instances_that_cannot_be_masked_are_not_logged() -> None:
    from aiml024.runtime.bundle import Bundle, BundleMeta, InputColumn
    from aiml024.runtime.pii import PiiMasker
    from aiml024.runtime.serving import LoggedInstances

    pytest.importorskip("mlserver")
    meta = BundleMeta(task="classification", target="y", id_column="id", classes=[0, 1],
                      columns=[InputColumn(name="email", dtype="categorical")])  # fmt: skip

    class Pipeline:
        named_steps = {"pii": PiiMasker(columns={"email": "email"})}

    logged = LoggedInstances(Bundle(Pipeline(), meta))
    assert logged.of(lambda: [{"id": 1, "email": "a@B.org", "y": 1}]) == [
        {"id": 1, "email": "<email>@b.org"}
    ]
    assert logged.of([object()]) is None  # not rows: nothing rather than the raw values
