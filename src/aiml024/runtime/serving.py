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

Endpoints:
    POST /v2/models/<model>/infer           V2 protocol; one input tensor per column
    POST /v1/inference/<deployment>:predict {"instances": [{column: value}, ...]} ->
        {"predictions": [...], "latency_ms": ..., "model": ..., "version": <sha256[:12]>}
        (at most 20 rows: "explain": true adds each prediction's SHAP explanation by input column;
        "counterfactual": true the fewest changes that flip its decision)

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
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlserver import MLModel
from mlserver.codecs import PandasCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.handlers.custom import CustomHandler, register_custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import Counter, Histogram
from pydantic import BaseModel

from aiml024.api.labels import short_digest
from aiml024.api.plan import RuntimeSettings

from .bundle import META_FILE, Bundle, bundle_digest, load_bundle
from .explain import counterfactual, local_explanation

log = logging.getLogger(__name__)

# MLServer re-imports (importlib.reload) the implementation module for every model it loads;
# reload re-runs this file in the same namespace, so state is kept via globals().get.

# Runtimes loaded in this process, by model name: the route owner reaches its canary here.
_LOADED: dict[str, Aiml024Runtime] = globals().get("_LOADED", {})

_LABELS = ["model_name", "model_version", "endpoint"]
# prometheus_client's default registry: the one MLServer's metrics port serves.
PREDICTION_ROWS: Counter = globals().get("PREDICTION_ROWS") or Counter(
    "aiml024_prediction_rows", "Rows predicted", _LABELS
)
PREDICTION_SECONDS: Histogram = globals().get("PREDICTION_SECONDS") or Histogram(
    "aiml024_prediction_seconds", "Time to predict one request", _LABELS
)

_NUMERIC = set("INT8 INT16 INT32 INT64 UINT8 UINT16 UINT32 UINT64 FP16 FP32 FP64".split())


MAX_EXPLAINED_ROWS = 20


class PredictRequest(BaseModel):
    """The product's request body. Module level so it pickles to parallel workers."""

    instances: list[dict[str, Any]]
    explain: bool = False  # add each row's SHAP explanation (aiml024.runtime.explain)
    counterfactual: bool = False  # add each row's counterfactual: the changes that flip it


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
        self._tmp: Path | None = None  # download dir of a remote bundle
        self._turns: dict[str, float] = {}
        deployment = self.runtime.deployment
        if deployment:
            # get_custom_handlers() inspects the instance right after __init__ (before load in
            # parallel mode), and a path per deployment needs a per-instance function.
            async def deployment_predict(body: PredictRequest) -> dict[str, Any]:
                return await self._route(body)

            # Real types, not postponed strings: with parallel workers MLServer wraps this with
            # functools.wraps in its own module, where FastAPI could not resolve the names.
            deployment_predict.__annotations__ = {"body": PredictRequest, "return": dict}
            path = f"/v1/inference/{deployment}:predict"
            register_custom_handler(CustomHandler(rest_path=path), deployment_predict)
            self.deployment_predict = deployment_predict

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
        self.inputs = [_tensor_meta(c.name, c.dtype) for c in self._bundle.meta.columns]
        self.outputs = [
            MetadataTensor(name="label", datatype="BYTES", shape=[-1, 1]),
            MetadataTensor(name="score", datatype="FP64", shape=[-1, 1]),
        ]
        _LOADED[self.name] = self
        self.ready = True
        return True

    async def unload(self) -> bool:
        _LOADED.pop(self.name, None)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return await super().unload()

    def bundle(self) -> Bundle:
        # A method, not a property: get_custom_handlers() evaluates every member via getattr.
        if self._bundle is None:
            raise MLServerError(f"model {self.name} is not loaded", status_code=503)
        return self._bundle

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """V2: one input per column, decoded by datatype whether or not content_type is "pd"."""
        for tensor in payload.inputs:
            self._check_column(tensor.name)
            self._check_datatype(tensor.name, tensor.datatype)
        try:
            frame = PandasCodec.decode_request(payload)
        except Exception as err:  # codec errors name no column; say what was sent
            raise InferenceError(f"cannot decode the request's inputs: {err}") from err
        result = self._predict_frame(frame, endpoint="v2")
        outputs = [_output(name, result[name]) for name in result.columns]
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version=self.version, outputs=outputs
        )

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
        if not instances:
            return []
        if (explain or counterfactuals) and len(instances) > MAX_EXPLAINED_ROWS:
            # Each explained row costs SHAP and up to three batches of candidate rows: any
            # caller of the route could otherwise make one request cost minutes of CPU.
            raise InferenceError(
                f"explain and counterfactual take at most {MAX_EXPLAINED_ROWS} instances per "
                f"request, not {len(instances)}"
            )
        for row in instances:
            for column in row:
                self._check_column(column)
        frame = pd.DataFrame.from_records(instances)
        result = self._predict_frame(frame, endpoint=endpoint)
        rows = [{k: _native(v) for k, v in row.items()} for row in result.to_dict(orient="records")]
        if explain or counterfactuals:
            typed = self.bundle().frame(frame)
            for i, row in enumerate(rows):
                if explain:
                    row["explanation"] = local_explanation(self.bundle(), typed.iloc[[i]])
                if counterfactuals:
                    row["counterfactual"] = counterfactual(self.bundle(), typed.iloc[[i]])
        return rows

    async def _route(self, body: PredictRequest) -> dict[str, Any]:
        start = time.perf_counter()
        target = self
        plan = self.runtime.plan
        if plan is not None:
            chosen = self._choose()
            target = _LOADED.get(chosen, self)
            if target is self and chosen != self.name:
                log.warning("model %s is not loaded here; %s serves instead", chosen, self.name)
        predictions = target.predict_records(
            body.instances, explain=body.explain, counterfactuals=body.counterfactual
        )
        latency_ms = round((time.perf_counter() - start) * 1000, 3)
        if plan is not None and plan.shadows:
            # After this handler returns: the caller's answer does not wait for the shadows.
            asyncio.get_running_loop().call_soon(self._shadow, body.instances)
        return {
            "predictions": predictions,
            "latency_ms": latency_ms,
            "model": target.name,
            "version": short_digest(target.digest),
        }

    def _shadow(self, instances: list[dict[str, Any]]) -> None:
        assert self.runtime.plan is not None
        for predictor in self.runtime.plan.shadows:
            name = predictor.model.name
            shadow = _LOADED.get(name)
            try:
                if shadow is not None:
                    shadow.predict_records(instances, endpoint="shadow")
            except Exception:  # a shadow's failure must never reach the caller
                log.exception("shadow model %s failed", name)

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

    def _predict_frame(self, frame: pd.DataFrame, endpoint: str) -> pd.DataFrame:
        meta = self.bundle().meta
        self._check_values(frame)
        start = time.perf_counter()
        try:
            predicted = self.bundle().predict(frame)
        except (ValueError, TypeError) as err:
            raise InferenceError(f"model {self.name} cannot predict these rows: {err}") from err
        labels = (self.name, self.version or "", endpoint)
        PREDICTION_SECONDS.labels(*labels).observe(time.perf_counter() - start)
        PREDICTION_ROWS.labels(*labels).inc(len(frame))
        columns = {}
        if meta.id_column and meta.id_column in frame:
            columns[meta.id_column] = frame[meta.id_column].to_numpy()
        columns["label"] = predicted["label"].to_numpy()
        columns["score"] = predicted["score"].to_numpy(dtype=float)
        return pd.DataFrame(columns)

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


def _output(name: str, values: pd.Series) -> ResponseOutput:
    """Encode one column: numbers as FP64/INT64, booleans as BOOL, anything else as BYTES."""
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
