"""Serving: a real MLServer started by aiml024.local.server, serving real bundles."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("mlserver")
pytest.importorskip("sklearn")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from aiml024.api.plan import (  # noqa: E402
    RUNTIME_CLASS,
    Predictor,
    PredictorPlan,
    RuntimeSettings,
    ServedModel,
)
from aiml024.local.server import (  # noqa: E402
    ServerInfo,
    ServerStartError,
    server_alive,
    start_server,
    stop_server,
)
from aiml024.runtime.bundle import BundleMeta, InputColumn, save_bundle  # noqa: E402

ROWS = [
    {"customer_id": "c-1", "tenure": 2.0, "plan": "basic"},
    {"customer_id": "c-2", "tenure": 48.0, "plan": "pro"},
    {"customer_id": "c-3", "tenure": 30.0, "plan": "basic"},
]


def _bundle(directory: Path, c: float) -> str:
    """A churn-like classifier on a numeric, a categorical and an id column; returns sha256."""
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {"tenure": rng.integers(1, 60, n).astype(float), "plan": rng.choice(["basic", "pro"], n)}
    )
    churn = np.where((frame["tenure"] < 20) | (frame["plan"] == "basic"), "yes", "no")
    features = ColumnTransformer(
        [("num", StandardScaler(), ["tenure"]), ("cat", OneHotEncoder(), ["plan"])]
    )
    pipeline = Pipeline([("features", features), ("clf", LogisticRegression(C=c))])
    pipeline.fit(frame, churn)
    meta = BundleMeta(
        task="classification",
        target="churn",
        id_column="customer_id",
        columns=[
            InputColumn(name="tenure", dtype="numeric"),
            InputColumn(name="plan", dtype="categorical"),
        ],
        classes=[str(c) for c in pipeline.classes_],
    )
    return save_bundle(directory, pipeline, meta)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("bundles")
    return {name: (root / name, _bundle(root / name, c)) for name, c in [("v1", 1.0), ("v2", 0.1)]}


@pytest.fixture(scope="module")
def server(
    bundles: dict[str, tuple[Path, str]], tmp_path_factory: pytest.TempPathFactory
) -> ServerInfo:
    """Deployment "churn": stable churn-v1 at 80 %, canary churn-v2 at 20 %, a shadow."""
    (v1, sha1), (v2, sha2) = bundles["v1"], bundles["v2"]
    plan = PredictorPlan("churn", (
        Predictor("stable", ServedModel("churn-v1", str(v1), sha1), 80),
        Predictor("canary", ServedModel("churn-v2", v2.as_uri(), sha2), 20),
        Predictor("shadow", ServedModel("churn-shadow", str(v1), sha1), 0, shadow=True),
    ))  # fmt: skip
    info = start_server(plan, tmp_path_factory.mktemp("serve"))
    yield info
    stop_server(info)


def _single(model: ServedModel) -> PredictorPlan:
    return PredictorPlan("churn", (Predictor("stable", model, 100),))


def test_the_route_owner_reads_the_plan_back_typed() -> None:
    """The local server writes each model's settings from the plan; the runtime reads the
    same typed value back (and the cluster's environment where the settings leave a gap)."""
    plan = PredictorPlan("churn", (
        Predictor("stable", ServedModel("churn-v1", "/b/v1", "a" * 64, "classification"), 90),
        Predictor("canary", ServedModel("churn-v2", "s3://b/v2", "b" * 64), 10),
    ))  # fmt: skip
    owner = RuntimeSettings("a" * 64, "churn", plan)
    assert RuntimeSettings.read(owner.extra()) == owner
    assert RuntimeSettings.read({"sha256": "b" * 64}) == RuntimeSettings("b" * 64)
    pod = {"AIML024_MODEL_SHA256": "c" * 64, "AIML024_DEPLOYMENT": "churn"}
    assert RuntimeSettings.read(None, pod) == RuntimeSettings("c" * 64, "churn")
    canary_pod = {**pod, "AIML024_ROLE": "canary", "AIML024_REQUEST_LOG": "s3://a/ns/_serving/c/"}
    read = RuntimeSettings.read(None, canary_pod)
    assert read.role == "canary" and read.request_log == "s3://a/ns/_serving/c/"
    with pytest.raises(ValueError, match="AIML024_ROLE"):
        RuntimeSettings.read(None, {**pod, "AIML024_ROLE": "admin"})
    with pytest.raises(ValueError):
        RuntimeSettings.read({"plan": {"deployment": "churn", "predictors": "nope"}})


def test_the_runtime_class_is_the_one_everyone_names() -> None:
    from aiml024.runtime.serving import Aiml024Runtime

    assert RUNTIME_CLASS == f"{Aiml024Runtime.__module__}.{Aiml024Runtime.__qualname__}"


def _v2_request(rows: list[dict], content_type: str | None = "pd") -> dict:
    frame = pd.DataFrame(rows)
    inputs = [
        {
            "name": column,
            "datatype": "FP64" if frame[column].dtype.kind == "f" else "BYTES",
            "shape": [len(frame), 1],
            "data": frame[column].tolist(),
        }
        for column in frame.columns
    ]
    request: dict = {"inputs": inputs}
    if content_type:
        request["parameters"] = {"content_type": content_type}
    return request


def _outputs(response: httpx.Response) -> dict[str, list]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


@pytest.mark.parametrize("content_type", ["pd", None], ids=["pandas-codec", "no-content-type"])
def test_v2_infer_returns_label_and_score_per_row(server: ServerInfo, content_type) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/churn-v1/infer", json=_v2_request(ROWS, content_type)
    )
    outputs = _outputs(response)
    assert outputs["customer_id"] == ["c-1", "c-2", "c-3"]
    assert set(outputs["label"]) <= {"yes", "no"} and len(outputs["label"]) == 3
    assert all(0.0 <= s <= 1.0 for s in outputs["score"])
    assert outputs["label"][0] == "yes"  # short tenure on the basic plan churns


def test_product_endpoint_echoes_ids_with_latency_and_version(
    server: ServerInfo, bundles: dict[str, tuple[Path, str]]
) -> None:
    response = httpx.post(server.routes["churn"], json={"instances": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["customer_id"] for p in body["predictions"]] == ["c-1", "c-2", "c-3"]
    assert all(set(p) == {"customer_id", "label", "score"} for p in body["predictions"])
    assert isinstance(body["latency_ms"], float) and body["latency_ms"] >= 0
    served = body["model"].removeprefix("churn-")
    assert body["version"] == bundles[served][1][:12]


def test_explain_adds_each_rows_explanation_or_says_why_not(server: ServerInfo) -> None:
    """`explain: true` on the product route: each prediction carries its explanation; this
    bundle is a plain scikit-learn pipeline, so it says SHAP is not available and why."""
    response = httpx.post(server.routes["churn"], json={"instances": ROWS[:2], "explain": True})
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        explanation = prediction["explanation"]
        assert explanation["decision"] == prediction["label"]
        assert explanation["method"] == "none" and "not an aiml024 ensemble" in explanation["reason"]


def test_explaining_many_rows_in_one_request_is_refused(server: ServerInfo) -> None:
    """Explanations cost far more than predictions: a caller cannot ask for them in bulk."""
    body = {"instances": ROWS * 7, "counterfactual": True}
    response = httpx.post(server.routes["churn"], json=body)
    assert response.status_code == 400
    assert "at most 20 instances per request, not 21" in response.text
    assert httpx.post(server.routes["churn"], json={"instances": ROWS * 7}).status_code == 200


def test_product_endpoint_splits_traffic_by_weight(server: ServerInfo) -> None:
    models = [
        httpx.post(server.routes["churn"], json={"instances": ROWS[:1]}).json()["model"]
        for _ in range(20)
    ]
    # Weighted round-robin is exact over any window of 5 requests (80/20).
    assert models.count("churn-v2") == 4 and models.count("churn-v1") == 16


@pytest.mark.parametrize("endpoint", ["v2", "product"])
def test_unknown_column_is_a_400_naming_it(server: ServerInfo, endpoint: str) -> None:
    rows = [{"customer_id": "c-9", "tenure": 5.0, "plna": "basic"}]
    if endpoint == "v2":
        response = httpx.post(f"{server.url}/v2/models/churn-v1/infer", json=_v2_request(rows))
    else:
        response = httpx.post(server.routes["churn"], json={"instances": rows})
    assert response.status_code == 400
    assert "plna" in response.json()["error"]


def test_text_in_a_numeric_column_is_a_400_naming_it(server: ServerInfo) -> None:
    rows = [{"customer_id": "c-9", "tenure": "long", "plan": "basic"}]
    response = httpx.post(server.routes["churn"], json={"instances": rows})
    assert response.status_code == 400
    assert "tenure" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/churn-v1/infer", json=_v2_request(rows))
    assert response.status_code == 400
    assert "tenure" in response.json()["error"]


def test_prediction_metrics_are_exposed(server: ServerInfo) -> None:
    httpx.post(server.routes["churn"], json={"instances": ROWS})
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    assert 'aiml024_prediction_rows_total{endpoint="rest"' in text
    assert "aiml024_prediction_seconds_bucket" in text
    assert 'aiml024_prediction_rows_total{endpoint="shadow",model_name="churn-shadow"' in text


def test_bundle_with_another_digest_refuses_to_load(
    bundles: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    path, _ = bundles["v1"]
    wrong = "0" * 64
    plan = _single(ServedModel("churn-v1", f"file://{path}", wrong))
    with pytest.raises(ServerStartError, match="digest mismatch") as raised:
        start_server(plan, tmp_path)
    assert wrong in str(raised.value)


def test_stop_server_leaves_nothing_behind(
    bundles: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    path, sha = bundles["v1"]
    info = start_server(_single(ServedModel("churn-v1", str(path), sha)), tmp_path)
    info = ServerInfo.model_validate_json(info.model_dump_json())  # as the control plane stores it
    assert server_alive(info)

    stop_server(info)

    assert not server_alive(info)
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", info.http_port))
    stop_server(info)  # already gone: no error


def test_runtime_loads_a_bundle_from_a_remote_store(bundles: dict[str, tuple[Path, str]]) -> None:
    """Any fsspec URL works: the bundle is downloaded, digest-checked, then served."""
    import asyncio

    import fsspec
    from mlserver.settings import ModelSettings

    from aiml024.runtime.serving import Aiml024Runtime

    path, sha = bundles["v1"]
    store = fsspec.filesystem("memory")
    for file in path.iterdir():
        store.pipe(f"/registry/churn-v1/{file.name}", file.read_bytes())
    settings = ModelSettings(
        name="churn-v1",
        implementation=Aiml024Runtime,
        parameters={"uri": "memory://registry/churn-v1", "extra": {"sha256": sha}},
    )
    runtime = Aiml024Runtime(settings)

    assert asyncio.run(runtime.load())
    predictions = runtime.predict_records(ROWS[:1])
    asyncio.run(runtime.unload())

    assert predictions[0]["customer_id"] == "c-1" and predictions[0]["label"] == "yes"


# -- the compiled fast path, the request log, feedback, gRPC, metrics ----------------------------


def _aiml024_bundle(directory: Path) -> str:
    """An aiml024 pipeline (PiiMasker -> Featurizer -> LightGBM ensemble): the fast path."""
    from aiml024.runtime.bundle import Bundle
    from aiml024.runtime.features import Featurizer
    from aiml024.runtime.learners import EnsembleEstimator
    from aiml024.runtime.pii import PiiMasker

    rng = np.random.default_rng(0)
    n = 200
    meta = BundleMeta(
        task="classification", target="churn", id_column="customer_id", classes=["no", "yes"],
        columns=[InputColumn(name="tenure", dtype="numeric"),
                 InputColumn(name="plan", dtype="categorical")],
    )  # fmt: skip
    raw = pd.DataFrame(
        {"tenure": rng.integers(1, 60, n).astype(float), "plan": rng.choice(["basic", "pro"], n)}
    )
    churn = np.where((raw["tenure"] < 20) | (raw["plan"] == "basic"), "yes", "no")
    members = [("lightgbm", {"num_leaves": 4, "min_child_samples": 5}, 10)]
    pipeline = Pipeline([
        ("pii", PiiMasker(columns={})),
        ("features", Featurizer(types={"tenure": "numeric", "plan": "categorical"})),
        ("model", EnsembleEstimator(members, [1.0], "classification", ["no", "yes"])),
    ]).fit(Bundle(None, meta).frame(raw), churn)  # fmt: skip
    return save_bundle(directory, pipeline, meta)


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServerInfo, Path, Path]:
    from aiml024.api.plan import request_log_root

    root = tmp_path_factory.mktemp("fast")
    sha = _aiml024_bundle(root / "bundle")
    log_root = request_log_root(str(root / "store"), "default", "churn")
    (Path(log_root) / "drift").mkdir(parents=True)
    (Path(log_root) / "drift" / "latest.json").write_text(
        '{"method": "psi", "features": [{"feature": "tenure", "score": 0.31}]}'
    )
    plan = _single(ServedModel("churn-fast", str(root / "bundle"), sha))
    info = start_server(plan, root / "serve", request_log=log_root)
    yield info, root / "bundle", Path(log_root)
    stop_server(info)


def test_fast_path_serves_what_the_bundle_predicts(fast_server) -> None:
    from aiml024.runtime.bundle import load_bundle

    info, bundle_dir, _ = fast_server
    response = httpx.post(info.routes["churn"], json={"instances": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    expected = load_bundle(bundle_dir).predict(ROWS)
    assert [p["label"] for p in body["predictions"]] == list(expected["label"])
    assert np.allclose([p["score"] for p in body["predictions"]], expected["score"], atol=1e-9)
    outputs = _outputs(httpx.post(f"{info.url}/v2/models/churn-fast/infer", json=_v2_request(ROWS)))
    assert np.allclose(outputs["score"], expected["score"], atol=1e-9)
    bad = httpx.post(info.routes["churn"], json={"instances": [{"tenure": "abc"}]})
    assert bad.status_code == 400 and "column 'tenure' is numeric; got 'abc'" in bad.json()["error"]
    assert httpx.post(info.routes["churn"], content=b"{nope").status_code == 400


def test_v2_grpc_answers_with_mlservers_stubs(fast_server) -> None:
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc

    info, bundle_dir, _ = fast_server
    request = pb.ModelInferRequest(model_name="churn-fast", inputs=[
        pb.ModelInferRequest.InferInputTensor(
            name="tenure", datatype="FP64", shape=[3, 1],
            contents=pb.InferTensorContents(fp64_contents=[r["tenure"] for r in ROWS])),
        pb.ModelInferRequest.InferInputTensor(
            name="plan", datatype="BYTES", shape=[3, 1],
            contents=pb.InferTensorContents(bytes_contents=[r["plan"].encode() for r in ROWS])),
    ])  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{info.grpc_port}") as channel:
        reply = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    outputs = {o.name: o for o in reply.outputs}
    from aiml024.runtime.bundle import load_bundle

    expected = load_bundle(bundle_dir).predict(ROWS)
    assert np.allclose(list(outputs["score"].contents.fp64_contents), expected["score"], atol=1e-9)
    assert [b.decode() for b in outputs["label"].contents.bytes_contents] == list(expected["label"])


def test_requests_and_feedback_reach_the_log_and_metrics(fast_server) -> None:
    import time

    from aiml024.servinglog import read_records

    info, _, log_root = fast_server
    answer = httpx.post(info.routes["churn"], json={"instances": ROWS[:1]}).json()
    feedback = f"{info.url}/v1/feedback/churn"
    assert httpx.post(feedback, json={"id": answer["id"], "outcome": 1}).status_code == 200
    listed = {"feedback": [{"id": answer["id"], "outcome": "yes"}]}
    assert httpx.post(feedback, json=listed).json() == {"accepted": 1}
    assert httpx.post(feedback, json={"id": answer["id"]}).status_code == 400
    deadline = time.monotonic() + 10
    records: list[dict] = []
    while time.monotonic() < deadline:
        records = [r for r in read_records(str(log_root)) if r["id"] == answer["id"]]
        outcomes = [r for r in read_records(str(log_root), "feedback") if r["id"] == answer["id"]]
        if records and len(outcomes) == 2:
            break
        time.sleep(0.3)
    [record] = records
    assert record["instances"] == ROWS[:1] and record["role"] == "stable"
    assert record["endpoint"] == "rest" and record["model"] == "churn-fast"
    assert record["predictions"][0]["score"] == answer["predictions"][0]["score"]
    assert [o["outcome"] for o in outcomes] == [1, "yes"]
    text = httpx.get(f"http://127.0.0.1:{info.metrics_port}/metrics").text
    route = 'deployment="churn",endpoint="rest",model="churn-fast",role="stable"'
    assert f'aiml024_requests_total{{code="200",{route}}}' in text
    assert f'aiml024_requests_total{{code="400",{route}}}' in text
    buckets = [line for line in text.splitlines() if line.startswith("aiml024_request_seconds_b")]
    assert any('le="0.0005"' in line and 'role="stable"' in line for line in buckets)
    scores = [line for line in text.splitlines() if line.startswith("aiml024_prediction_score_b")]
    assert any('model="churn-fast"' in line and 'deployment="churn"' in line for line in scores)
    assert 'aiml024_drift_score{deployment="churn",feature="tenure",method="psi"} 0.31' in text
