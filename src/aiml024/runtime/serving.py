"""The project's MLServer runtime: serves one model bundle over V2 and the product's REST format.

Model settings (model-settings.json, or MLSERVER_MODEL_* in a Seldon predictor's container):
    implementation      aiml024.runtime.serving.Aiml024Runtime (aiml024.api.plan.RUNTIME_CLASS)
    parameters.uri      bundle directory: a local path, file://, or any fsspec URL (s3://, gs://)
    parameters.version  the V2 model version
    parameters.extra    aiml024.api.plan.RuntimeSettings, typed and checked on load:
                        sha256      expected bundle digest; refuses to load on a mismatch
                                    (env AIML024_MODEL_SHA256 when unset: one model per pod)
                        deployment  when set, this model owns the product route below
                                    (env AIML024_DEPLOYMENT when unset)
                        plan        the Deployment's predictor plan, on the route owner when its
                                    predictors share this MLServer: the route is split over the
                                    plan's live predictors by weight and copied to its shadows

                        request_log the request/response log's URI root (aiml024.runtime.requestlog;
                                    env AIML024_REQUEST_LOG when unset). A request's instances
                                    are logged as LoggedInstances keeps them: the bundle's input
                                    and id columns only, PII masked or dropped as the served
                                    pipeline's PiiMasker does (on the log's writer thread)

Endpoints:
    POST /v2/models/<model>/infer           V2 protocol (REST, and gRPC on MLServer's gRPC port);
                                            one input tensor per column
    POST /v1/inference/<deployment>:predict {"instances": [{column: value}, ...]} ->
        {"id": <request id>, "predictions": [...], "latency_ms": ..., "model": ...,
         "version": <sha256[:12]>}
        (at most 20 rows: "explain": true adds each prediction's SHAP explanation by input column;
        "counterfactual": true the fewest changes that flip its decision)
    POST /v1/feedback/<deployment>          {"id": <request id>, "outcome": ...} or
                                            {"feedback": [...]}: appended to the request log

Predictions go through the bundle compiled at load (aiml024.runtime.fastpath: numpy over the
batch, native tree predictors on one thread); a pipeline it does not know is served by
Bundle.predict. Metrics (prometheus_client's default registry, MLServer's metrics port):
aiml024_requests_total{deployment,model,role,endpoint,code}, aiml024_request_seconds{deployment,
model,role,endpoint}, aiml024_prediction_score{deployment,model}, aiml024_prediction_rows_total,
aiml024_prediction_seconds, and aiml024_drift_score{deployment,method,feature} from
<request log>/drift/latest.json.

Traffic split: the route owner picks a model per request by smooth weighted round-robin (the
nginx algorithm) over the plan's live predictors, so a 90/10 split sends exactly 10 of every 100 requests to the canary,
interleaved and reproducible. The chosen peer is called in-process: MLServer loads every model of
a repository into every worker process, and each loaded runtime registers itself in `_LOADED`.
Shadows predict after the answer is computed; their results only reach the metrics. In a
cluster each Seldon predictor serves one model and Seldon splits traffic, so there is no plan
there and the route serves its own model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlserver import MLModel
from mlserver.errors import InferenceError, MLServerError
from mlserver.handlers.custom import CustomHandler, register_custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response

from aiml024.api.labels import short_digest
from aiml024.api.plan import RuntimeSettings

from .bundle import META_FILE, Bundle, bundle_digest, load_bundle
from .explain import counterfactual, local_explanation
from .fastpath import (
    FastPath,
    InvalidInput,
    Prediction,
    Unsupported,
    compile_bundle,
    value_masker,
)
from .requestlog import RequestLog, new_id

log = logging.getLogger(__name__)

# MLServer re-imports (importlib.reload) the implementation module for every model it loads;
# reload re-runs this file in the same namespace, so state is kept via globals().get.

# Runtimes loaded in this process, by model name: the route owner reaches its canary here.
_LOADED: dict[str, Aiml024Runtime] = globals().get("_LOADED", {})
# Deployment -> its request log root: where the drift collector reads drift/latest.json.
_DRIFT_ROOTS: dict[str, str] = globals().get("_DRIFT_ROOTS", {})

_LABELS = ["model_name", "model_version", "endpoint"]
_ROUTE = ["deployment", "model", "role", "endpoint"]
# Fine-grained at the low end: the fast path answers in about a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
                   0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)  # fmt: skip
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# prometheus_client's default registry: the one MLServer's metrics port serves.
PREDICTION_ROWS: Counter = globals().get("PREDICTION_ROWS") or Counter(
    "aiml024_prediction_rows", "Rows predicted", _LABELS
)
PREDICTION_SECONDS: Histogram = globals().get("PREDICTION_SECONDS") or Histogram(
    "aiml024_prediction_seconds", "Time to predict one request", _LABELS
)
REQUESTS: Counter = globals().get("REQUESTS") or Counter(
    "aiml024_requests", "Requests served, by status code", [*_ROUTE, "code"]
)
REQUEST_SECONDS: Histogram = globals().get("REQUEST_SECONDS") or Histogram(
    "aiml024_request_seconds", "Time to answer one request", _ROUTE, buckets=LATENCY_BUCKETS
)
PREDICTION_SCORE: Histogram = globals().get("PREDICTION_SCORE") or Histogram(
    "aiml024_prediction_score",
    "Served scores (positive-class probability, top-class probability or predicted value)",
    ["deployment", "model"],
    buckets=SCORE_BUCKETS,
)

_NUMERIC = set("INT8 INT16 INT32 INT64 UINT8 UINT16 UINT32 UINT64 FP16 FP32 FP64".split())
DRIFT_CACHE_SECONDS = 30.0
MAX_EXPLAINED_ROWS = 20


class DriftCollector:
    """`aiml024_drift_score{deployment,method,feature}` from each deployment's
    <request log root>/drift/latest.json (another component writes it), read at most every
    30 s; a missing or unreadable file exposes nothing and is logged once."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[tuple[str, str, float]]]] = {}
        self._warned: set[str] = set()

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "aiml024_drift_score", "Drift of served inputs against training, by feature",
            labels=["deployment", "method", "feature"],
        )  # fmt: skip
        for deployment, root in list(_DRIFT_ROOTS.items()):
            for method, feature, score in self._scores(root):
                family.add_metric([deployment, method, feature], score)
        yield family

    def _scores(self, root: str) -> list[tuple[str, str, float]]:
        now = time.monotonic()
        cached = self._cache.get(root)
        if cached and now - cached[0] < DRIFT_CACHE_SECONDS:
            return cached[1]
        scores: list[tuple[str, str, float]] = []
        try:
            scores = _read_drift(root)
        except FileNotFoundError:
            pass
        except Exception as error:  # garbage from another writer: no series, one warning
            if root not in self._warned:
                self._warned.add(root)
                log.warning("drift report under %s is unreadable: %s", root, error)
        self._cache[root] = (now, scores)
        return scores


def _read_drift(root: str) -> list[tuple[str, str, float]]:
    import fsspec

    with fsspec.open(f"{root.rstrip('/')}/drift/latest.json", "rb") as handle:
        document = json.loads(handle.read())
    method = str(document.get("method", ""))
    return [(method, str(f["feature"]), float(f["score"])) for f in document["features"]]


if "DRIFT_COLLECTOR" not in globals():
    DRIFT_COLLECTOR = DriftCollector()
    REGISTRY.register(DRIFT_COLLECTOR)


class Aiml024Runtime(MLModel):
    """Serves one aiml024 model bundle (see the module docstring for its settings)."""

    def __init__(self, settings: Any):
        super().__init__(settings)
        extra = settings.parameters.extra if settings.parameters else None
        try:
            self.runtime = RuntimeSettings.read(extra, os.environ)
        except ValueError as error:  # pydantic's ValidationError is one
            raise MLServerError(f"model {self.name}: invalid parameters.extra: {error}") from None
        self.digest = ""  # the loaded bundle's sha256
        self._bundle: Bundle | None = None
        self._fast: FastPath | None = None
        self._tmp: Path | None = None  # download dir of a remote bundle
        self._turns: dict[str, float] = {}
        self._log: RequestLog | None = None
        self._logged: LoggedInstances | None = None  # what of a request the log may keep
        self._series: dict[str, Any] = {}  # metric children by endpoint
        deployment = self.runtime.deployment
        if deployment:
            # get_custom_handlers() inspects the instance right after __init__ (before load in
            # parallel mode), and a path per deployment needs a per-instance function. The raw
            # request and orjson: FastAPI's pydantic body parsing cost more than the model.
            async def deployment_predict(request: Request) -> Response:
                return await self._route(await request.body())

            async def deployment_feedback(request: Request) -> Response:
                return self._feedback(await request.body())

            # Real types, not postponed strings: with parallel workers MLServer wraps these with
            # functools.wraps in its own module, where FastAPI could not resolve the names.
            for handler, path in (
                (deployment_predict, f"/v1/inference/{deployment}:predict"),
                (deployment_feedback, f"/v1/feedback/{deployment}"),
            ):
                handler.__annotations__ = {"request": Request, "return": Response}
                register_custom_handler(CustomHandler(rest_path=path), handler)
            self.deployment_predict = deployment_predict
            self.deployment_feedback = deployment_feedback

    async def load(self) -> bool:
        # Resolves file:// and paths relative to model-settings.json; other schemes pass through.
        uri = await get_model_uri(self.settings)
        directory, self._tmp = _fetch(uri)
        if not (directory / META_FILE).is_file():
            raise MLServerError(f"model {self.name}: no model bundle at {uri}")
        self.digest = bundle_digest(directory)
        expected = self.runtime.sha256
        if expected and self.digest != expected:
            raise MLServerError(
                f"model {self.name}: bundle digest mismatch at {uri}: "
                f"expected sha256 {expected}, found {self.digest}; refusing to load"
            )
        self._bundle = load_bundle(directory)
        try:
            self._fast = compile_bundle(self._bundle)
        except Unsupported as why:  # e.g. a hand-made scikit-learn pipeline
            log.info("model %s: served by Bundle.predict (%s)", self.name, why)
        self.inputs = [_tensor_meta(c.name, c.dtype) for c in self._bundle.meta.columns]
        self.outputs = [
            MetadataTensor(name="label", datatype="BYTES", shape=[-1, 1]),
            MetadataTensor(name="score", datatype="FP64", shape=[-1, 1]),
        ]
        if self.runtime.request_log:
            self._logged = LoggedInstances(self._bundle)
            self._log = RequestLog(self.runtime.request_log)
            if self.deployment_name():
                _DRIFT_ROOTS[self.deployment_name()] = self.runtime.request_log
        _LOADED[self.name] = self
        self.ready = True
        return True

    async def unload(self) -> bool:
        _LOADED.pop(self.name, None)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return await super().unload()

    def bundle(self) -> Bundle:
        # A method, not a property: get_custom_handlers() evaluates every member via getattr.
        if self._bundle is None:
            raise MLServerError(f"model {self.name} is not loaded", status_code=503)
        return self._bundle

    # -- V2 (REST and gRPC) ------------------------------------------------------------------

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """V2: one input per column, decoded by datatype whether or not content_type is "pd"."""
        started = time.perf_counter()
        # MLServer passes the caller's headers on: HTTP always has a Host, gRPC metadata not.
        headers = (payload.parameters.headers if payload.parameters else None) or {}
        endpoint = "v2" if "host" in headers else "grpc"
        try:
            columns, n = self._v2_columns(payload)
            prediction = self._score(columns, n, endpoint)
        except BaseException as error:
            self._count(endpoint, _code(error), started)
            raise
        outputs = []
        id_column = self.bundle().meta.id_column
        raw = endpoint == "grpc"  # gRPC carries BYTES as bytes, JSON as text
        if prediction.ids is not None and id_column:
            outputs.append(_output(id_column, prediction.ids, raw))
        outputs += [_output("label", prediction.labels, raw), _output("score", prediction.scores)]
        self._served(endpoint, started, prediction, lambda: _rows_of(columns, n))
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version=self.version, outputs=outputs
        )

    def _v2_columns(self, payload: InferenceRequest) -> tuple[dict[str, Any], int]:
        """Column -> values from the V2 inputs (flattened; BYTES as text, numbers as numpy)."""
        columns: dict[str, Any] = {}
        n = 0
        for tensor in payload.inputs:
            self._check_column(tensor.name)
            self._check_datatype(tensor.name, tensor.datatype)
            data = tensor.data.root if hasattr(tensor.data, "root") else tensor.data
            values = _flat(list(data) if not isinstance(data, list) else data)
            if tensor.datatype == "BYTES":
                values = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in values]
            elif tensor.datatype in _NUMERIC and None not in values:
                values = np.asarray(values, dtype=np.float64)
            columns[tensor.name] = values
            n = len(values)
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise InferenceError(f"inputs differ in length: {sorted(lengths)}")
        return columns, n

    # -- the product's format ----------------------------------------------------------------

    def predict_records(
        self,
        instances: list[dict[str, Any]],
        endpoint: str = "rest",
        explain: bool = False,
        counterfactuals: bool = False,
    ) -> list[dict[str, Any]]:
        """The product's format: JSON rows in, JSON-native rows with label and score out;
        with `explain`, each row also carries its SHAP explanation by input column, and with
        `counterfactuals` the fewest changes that would flip its decision."""
        return self._records(instances, endpoint, explain, counterfactuals)[0]

    def _records(
        self,
        instances: list[dict[str, Any]],
        endpoint: str,
        explain: bool = False,
        counterfactuals: bool = False,
    ) -> tuple[list[dict[str, Any]], Prediction | None]:
        if not instances:
            return [], None
        if (explain or counterfactuals) and len(instances) > MAX_EXPLAINED_ROWS:
            # Each explained row costs SHAP and up to three batches of candidate rows: any
            # caller of the route could otherwise make one request cost minutes of CPU.
            raise InferenceError(
                f"explain and counterfactual take at most {MAX_EXPLAINED_ROWS} instances per "
                f"request, not {len(instances)}"
            )
        if self._fast is not None:
            try:
                columns = self._fast.rows_to_columns(instances)
            except InvalidInput as error:
                raise InferenceError(str(error)) from None
        else:
            columns = _columns_of(instances, self)
        prediction = self._score(columns, len(instances), endpoint)
        rows = _product_rows(prediction, self.bundle().meta.id_column)
        if explain or counterfactuals:  # the slow path: pandas, SHAP, candidate batches
            typed = self.bundle().frame(pd.DataFrame.from_records(instances))
            for i, row in enumerate(rows):
                if explain:
                    row["explanation"] = local_explanation(self.bundle(), typed.iloc[[i]])
                if counterfactuals:
                    row["counterfactual"] = counterfactual(self.bundle(), typed.iloc[[i]])
        return rows, prediction

    async def _route(self, body: bytes) -> Response:
        started = time.perf_counter()
        target = self
        try:
            instances, explain, counterfactuals = _parse_predict(body)
            if self.runtime.plan is not None:
                chosen = self._choose()
                target = _LOADED.get(chosen, self)
                if target is self and chosen != self.name:
                    log.warning("model %s is not loaded here; %s serves instead", chosen, self.name)
            rows, prediction = target._records(instances, "rest", explain, counterfactuals)
        except BaseException as error:
            target._count("rest", _code(error), started)
            raise
        request_id = new_id()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if prediction is not None:
            target._served("rest", started, prediction, instances, request_id, latency_ms)
        plan = self.runtime.plan
        if plan is not None and plan.shadows and instances:
            # After this handler returns: the caller's answer does not wait for the shadows.
            asyncio.get_running_loop().call_soon(self._shadow, instances, request_id)
        body_out = {
            "id": request_id,
            "predictions": rows,
            "latency_ms": latency_ms,
            "model": target.name,
            "version": short_digest(target.digest),
        }
        return Response(orjson.dumps(body_out, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")  # fmt: skip

    def _shadow(self, instances: list[dict[str, Any]], request_id: str) -> None:
        assert self.runtime.plan is not None
        for predictor in self.runtime.plan.shadows:
            name = predictor.model.name
            shadow = _LOADED.get(name)
            if shadow is None:
                continue
            started = time.perf_counter()
            try:
                _, prediction = shadow._records(instances, "shadow")
            except Exception as error:  # a shadow's failure must never reach the caller
                shadow._count("shadow", _code(error), started)
                log.exception("shadow model %s failed", name)
                continue
            if prediction is not None:
                shadow._served("shadow", started, prediction, instances, request_id)

    def _choose(self) -> str:
        """Smooth weighted round-robin over the plan's live predictors: exact shares,
        interleaved, no randomness."""
        assert self.runtime.plan is not None
        routes = {p.model.name: float(p.weight) for p in self.runtime.plan.live}
        total = sum(routes.values())
        if total <= 0:
            return self.name
        for name, weight in routes.items():
            self._turns[name] = self._turns.get(name, 0.0) + weight
        chosen = max(routes, key=lambda n: self._turns[n])
        self._turns[chosen] -= total
        return chosen

    # -- feedback ----------------------------------------------------------------------------

    def _feedback(self, body: bytes) -> Response:
        """POST /v1/feedback/<deployment>: {"id", "outcome"} or {"feedback": [...]}."""
        if self._log is None:
            raise MLServerError(
                f"deployment {self.deployment_name()} keeps no request log "
                "(set parameters.extra.request_log or $AIML024_REQUEST_LOG)",
                status_code=503,
            )
        entries = _parse_feedback(body)
        at = time.time()
        for entry in entries:
            record = {"id": entry["id"], "at": at, "deployment": self.deployment_name(),
                      "outcome": entry["outcome"]}  # fmt: skip
            self._log.add("feedback", record)
        return Response(orjson.dumps({"accepted": len(entries)}), media_type="application/json")

    # -- scoring, metrics, the request log ---------------------------------------------------

    def _score(self, columns: Mapping[str, Any], n: int, endpoint: str) -> Prediction:
        """The batch's predictions: the compiled fast path, else Bundle.predict."""
        started = time.perf_counter()
        try:
            if self._fast is not None:
                prediction = self._fast.predict_columns(columns, n)
            else:
                prediction = self._slow(columns)
        except InvalidInput as error:
            raise InferenceError(str(error)) from None
        except (ValueError, TypeError) as error:
            raise InferenceError(f"model {self.name} cannot predict these rows: {error}") from error
        labels = (self.name, self.version or "", endpoint)
        PREDICTION_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        PREDICTION_ROWS.labels(*labels).inc(n)
        return prediction

    def _slow(self, columns: Mapping[str, Any]) -> Prediction:
        frame = pd.DataFrame({c: list(v) for c, v in columns.items()})
        self._check_values(frame)
        predicted = self.bundle().predict(frame)
        id_column = self.bundle().meta.id_column
        ids = frame[id_column].tolist() if id_column and id_column in frame else None
        labels = [_native(v) for v in predicted["label"]]
        return Prediction(labels, predicted["score"].to_numpy(dtype=float), ids)

    def deployment_name(self) -> str:
        if self.runtime.deployment:
            return self.runtime.deployment
        plan = self._plan()
        return plan.deployment if plan is not None else ""

    def _plan(self) -> Any:
        """The plan this model is part of: its own (the route owner's) or its owner's."""
        if self.runtime.plan is not None:
            return self.runtime.plan
        for runtime in list(_LOADED.values()):
            plan = runtime.runtime.plan
            if plan is not None and any(p.model.name == self.name for p in plan):
                return plan
        return None

    def _role(self) -> str:
        plan = self._plan()
        if plan is None:  # a cluster pod: one predictor, its role in the environment
            return self.runtime.role or "stable"
        return next((p.role for p in plan if p.model.name == self.name), "stable")

    def _children(self, endpoint: str) -> Any:
        """The metric series of (this model, endpoint), made once: labels() costs a lookup."""
        found = self._series.get(endpoint)
        if found is None:
            deployment, role = self.deployment_name(), self._role()
            route = (deployment, self.name, role, endpoint)
            codes = {c: REQUESTS.labels(*route, c) for c in ("200", "400", "500")}
            found = (codes, REQUEST_SECONDS.labels(*route),
                     PREDICTION_SCORE.labels(deployment, self.name), role)  # fmt: skip
            self._series[endpoint] = found
        return found

    def _count(self, endpoint: str, code: str, started: float) -> None:
        codes, seconds, _, _ = self._children(endpoint)
        codes[code].inc()
        seconds.observe(time.perf_counter() - started)

    def _served(
        self,
        endpoint: str,
        started: float,
        prediction: Prediction,
        instances: Any,
        request_id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        codes, seconds, scores, role = self._children(endpoint)
        elapsed = time.perf_counter() - started
        codes["200"].inc()
        seconds.observe(elapsed)
        for score in prediction.scores.tolist():
            if score == score:
                scores.observe(score)
        if self._log is None or self._logged is None:
            return
        labels, values = prediction.labels, prediction.scores
        logged = self._logged
        self._log.add("requests", {
            "id": request_id or new_id(), "at": time.time(),
            "deployment": self.deployment_name(), "model": self.name, "sha256": self.digest,
            "role": role, "endpoint": endpoint,
            "instances": lambda: logged.of(instances),
            "predictions": lambda: [{"label": _native(label), "score": _native(score)}
                                    for label, score in zip(labels, values.tolist(),
                                                            strict=True)],
            "latencyMs": latency_ms if latency_ms is not None else round(elapsed * 1000, 3),
        })  # fmt: skip

    # -- checks (the slow path's; the fast path checks as it compiles each column) -----------

    def _check_column(self, name: str) -> None:
        meta = self.bundle().meta
        if name not in self.bundle().known_columns():
            expected = ", ".join(c.name for c in meta.columns)
            raise InferenceError(f"unknown input column '{name}' (the model expects: {expected})")

    def _check_datatype(self, name: str, datatype: str) -> None:
        dtypes = {c.name: c.dtype for c in self.bundle().meta.columns}
        if dtypes.get(name) == "numeric" and datatype not in _NUMERIC | {"BOOL"}:
            raise InferenceError(f"column '{name}' is numeric; got datatype {datatype}")

    def _check_values(self, frame: pd.DataFrame) -> None:
        """Reject values that the bundle would silently turn into missing (e.g. "abc" -> NaN)."""
        for column in self.bundle().meta.columns:
            if column.name not in frame:
                continue
            values = frame[column.name]
            if column.dtype == "numeric":
                bad = values.map(lambda v: isinstance(v, str))
            elif column.dtype == "boolean":
                bad = ~values.map(lambda v: v is None or v != v or v in (True, False))
            elif column.dtype == "datetime":
                bad = pd.to_datetime(values, errors="coerce", utc=True).isna() & values.notna()
            else:
                continue
            if bad.any():
                raise InferenceError(
                    f"column '{column.name}' is {column.dtype}; got {values[bad].iloc[0]!r}"
                )


class LoggedInstances:
    """A request's rows as the request log keeps them: only the bundle's input columns and its
    id column, PII masked as the served pipeline masks it (PiiMasker: `mask` -> the masked
    value, `drop` -> the column left out), so no client's email or phone number is stored in
    clear text. Runs on the log's writer thread, not the hot path."""

    def __init__(self, bundle: Bundle):
        meta = bundle.meta
        steps = dict(getattr(bundle.pipeline, "named_steps", {}) or {})
        masker = steps.get("pii")
        pii = {str(c): str(k) for c, k in (getattr(masker, "columns", None) or {}).items()}
        keep = [c.name for c in meta.columns]
        if meta.id_column and meta.id_column not in keep:
            keep.append(meta.id_column)
        if masker is not None and getattr(masker, "action", "mask") == "drop":
            keep = [c for c in keep if c not in pii]
            pii = {}
        self.keep = frozenset(keep)
        # column -> PiiMasker's mask of one present value (the fast path's, value by value:
        # a pandas Series per record cost the writer thread ~1.6 ms of GIL per request)
        self.masked = {c: value_masker(k) for c, k in pii.items() if c in self.keep}

    def of(self, instances: Any) -> list[dict[str, Any]] | None:
        """`rows` of the instances (or of what a zero-argument callable returns); None, with
        the error logged, when they cannot be masked: never the raw values."""
        try:
            return self.rows(instances() if callable(instances) else instances)
        except Exception:
            log.exception("request log: instances not logged, they could not be masked")
            return None

    def rows(self, instances: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        keep, masked = self.keep, self.masked
        rows = [{c: v for c, v in row.items() if c in keep} for row in instances]
        if masked:
            for row in rows:
                for column, mask in masked.items():
                    if column in row:
                        value = row[column]
                        missing = value is None or (isinstance(value, float) and value != value)
                        row[column] = None if missing or mask is None else mask(value)
        return rows


def _parse_predict(body: bytes) -> tuple[list[dict[str, Any]], bool, bool]:
    """The product's request body: {"instances": [{column: value}], "explain"?,
    "counterfactual"?}; InferenceError (400) naming what is wrong."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InferenceError(f"the request body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InferenceError('the request body must be an object {"instances": [...]}')
    instances = document.get("instances")
    if not isinstance(instances, list):
        raise InferenceError("'instances' must be a list of objects, one per row")
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise InferenceError(f"instances[{i}] must be an object of column values")
    flags = []
    for field in ("explain", "counterfactual"):
        value = document.get(field, False)
        if not isinstance(value, bool):
            raise InferenceError(f"'{field}' must be true or false, not {value!r}")
        flags.append(value)
    return instances, flags[0], flags[1]


def _parse_feedback(body: bytes) -> list[dict[str, Any]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InferenceError(f"the feedback body is not JSON: {error}") from None
    if isinstance(document, dict) and "feedback" in document:
        entries = document["feedback"]
        if not isinstance(entries, list) or not entries:
            raise InferenceError("'feedback' must be a non-empty list of {id, outcome}")
    else:
        entries = [document]
    for i, entry in enumerate(entries):
        where = f"feedback[{i}]" if len(entries) > 1 or "feedback" in document else "the body"
        if not isinstance(entry, dict) or set(entry) != {"id", "outcome"}:
            raise InferenceError(f'{where} must be {{"id": <request id>, "outcome": <value>}}')
        if not isinstance(entry["id"], str) or not entry["id"]:
            raise InferenceError(f"{where}: 'id' must be the request id (a string)")
        if not isinstance(entry["outcome"], (bool, int, float, str)):
            raise InferenceError(f"{where}: 'outcome' must be a number, boolean or string")
    return entries


def _code(error: BaseException) -> str:
    status = getattr(error, "status_code", 500)
    return "400" if isinstance(status, int) and 400 <= status < 500 else "500"


def _columns_of(instances: list[dict[str, Any]], runtime: Aiml024Runtime) -> dict[str, list[Any]]:
    """Rows -> columns for the slow path, unknown columns refused."""
    names: set[str] = set().union(*instances)
    for name in sorted(names):
        runtime._check_column(name)
    return {c: [row.get(c) for row in instances] for c in names}


def _rows_of(columns: Mapping[str, Sequence[Any]], n: int) -> list[dict[str, Any]]:
    """V2 columns back as row dicts (for the request log, on its writer thread)."""
    lists = {c: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for c, v in columns.items()}
    return [{c: values[i] for c, values in lists.items()} for i in range(n)]


def _product_rows(prediction: Prediction, id_column: str | None) -> list[dict[str, Any]]:
    scores = [None if s != s else s for s in prediction.scores.tolist()]
    labels = [_native(v) for v in prediction.labels]
    if prediction.ids is not None and id_column:
        return [{id_column: _native(i), "label": label, "score": score}
                for i, label, score in zip(prediction.ids, labels, scores, strict=True)]  # fmt: skip
    return [{"label": label, "score": score} for label, score in zip(labels, scores, strict=True)]


def _flat(values: list[Any]) -> list[Any]:
    """[[a], [b]] (shape [n, 1]) -> [a, b]."""
    if values and isinstance(values[0], list):
        return [v for row in values for v in row]
    return values


def _fetch(uri: str) -> tuple[Path, Path | None]:
    """A local directory for the bundle, and the temp dir to remove later for a remote one."""
    if "://" not in uri:
        return Path(uri), None
    import fsspec  # remote stores only; their drivers (s3fs, gcsfs) come with extras

    target = Path(tempfile.mkdtemp(prefix="aiml024-bundle-"))
    fs, path = fsspec.core.url_to_fs(uri)
    fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    return target, target


def _tensor_meta(name: str, dtype: str) -> MetadataTensor:
    datatype = {"numeric": "FP64", "boolean": "BOOL"}.get(dtype, "BYTES")
    return MetadataTensor(name=name, datatype=datatype, shape=[-1, 1])


def _output(name: str, values: Sequence[Any] | np.ndarray, raw: bool = False) -> ResponseOutput:
    """Encode one column: numbers as FP64/INT64, booleans as BOOL, anything else as BYTES."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        data: list[Any] = [None if v != v else v for v in values.tolist()]
        return ResponseOutput(name=name, datatype="FP64", shape=[len(data), 1], data=data)
    data = [_native(v) for v in values]
    present = [v for v in data if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        datatype = "BOOL"
    elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        datatype = "INT64"
    elif present and all(isinstance(v, (int, float)) for v in present):
        datatype = "FP64"
    else:
        datatype, data = "BYTES", [None if v is None else str(v) for v in data]
        if raw:
            data = [b"" if v is None else v.encode() for v in data]
    return ResponseOutput(name=name, datatype=datatype, shape=[len(data), 1], data=data)


def _native(value: Any) -> Any:
    """JSON-native scalars: numpy -> python, NaN/NaT -> None, timestamps -> ISO strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if value is pd.NaT or value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value

