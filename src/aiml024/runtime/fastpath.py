"""The serving hot path: a bundle's fitted pipeline compiled into numpy over the request batch.

`compile_bundle(bundle)` reads the fitted PiiMasker -> Featurizer -> EnsembleEstimator pipeline
once, at load, and returns a `FastPath` that scores raw request rows (or columns) without a
pandas frame per request:

- each input column becomes one numpy array for the whole batch: typed as `Bundle.frame` types
  it, checked once per batch against the training schema (`InvalidInput` names the field),
  masked as PiiMasker masks it and featurized as the Featurizer does (categorical levels by
  dict lookup, ISO datetimes and TF-IDF+SVD text natively);
- each ensemble member predicts through its learner's native predictor with one thread
  (LightGBM Booster, XGBoost inplace_predict), other learners as they are; an XGBoost member
  scores batches of up to WALK_ROWS rows by walking its trees in numpy (XGBoostTrees: the same
  float32 numbers bit for bit, checked at load, without XGBoost's ~0.4 ms cost per call);
- the calibrator and the decision threshold apply as in `Bundle.predict`.

Anything the compiler does not know (another pipeline, a datetime that is not ISO 8601, an
unusual column type) goes through the original code for those columns only, so predictions
equal `Bundle.predict` (to float rounding, well under 1e-9) whatever the input.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from .bundle import Bundle
from .features import _FALSE, _TRUE, Featurizer
from .learners import EnsembleEstimator, Fitted, get_learner, infer
from .pii import TOKENS, scrub_text

Values = Sequence[Any]
Block = Callable[[Values], np.ndarray]  # one column's values -> its (n, width) features
Member = Callable[[np.ndarray], np.ndarray]

_NONE = type(None)
_NUMBER_TYPES = frozenset({float, int, bool, _NONE, np.float64, np.float32, np.int64, np.int32,
                           np.bool_})  # fmt: skip
_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_DIGIT = re.compile(r"\d")
# Above this many rows, pandas' and scikit-learn's vectorized code beats a loop per row for
# datetime and text columns (it costs ~0.3 ms a call, so single rows loop).
VECTORIZED_ROWS = 64
_DAY_NS = float(np.timedelta64(1, "D") / np.timedelta64(1, "ns"))
_EMAIL_DOMAIN = re.compile(r"@([^@\s]+)\s*$")
# Datetime parts the compiler computes from a Python datetime (pandas .dt accessor names).
_DT_PARTS: dict[str, Callable[[datetime], float]] = {
    "year": lambda d: float(d.year),
    "month": lambda d: float(d.month),
    "day": lambda d: float(d.day),
    "hour": lambda d: float(d.hour),
    "minute": lambda d: float(d.minute),
    "quarter": lambda d: float((d.month - 1) // 3 + 1),
    "dayofweek": lambda d: float(d.weekday()),
    "dayofyear": lambda d: float(d.timetuple().tm_yday),
}


class InvalidInput(ValueError):
    """A request the model cannot score as sent; the message names the field."""


class Unsupported(Exception):
    """The bundle's pipeline is not one the compiler knows: serve it with Bundle.predict."""


@dataclass
class Prediction:
    """A batch's decisions: labels (JSON-native), scores, and the id column's values if sent."""

    labels: list[Any]
    scores: np.ndarray
    ids: list[Any] | None = None


class FastPath:
    """A bundle compiled for serving; see the module docstring."""

    def __init__(self, bundle: Bundle):
        pipeline, meta = bundle.pipeline, bundle.meta
        steps = dict(getattr(pipeline, "named_steps", {}))
        featurizer, model = steps.get("features"), steps.get("model")
        if not isinstance(featurizer, Featurizer) or not isinstance(model, EnsembleEstimator):
            raise Unsupported("not an aiml024 pipeline (PiiMasker -> Featurizer -> ensemble)")
        if list(steps) not in (["pii", "features", "model"], ["features", "model"]):
            raise Unsupported(f"unexpected pipeline steps {list(steps)}")
        masker = steps.get("pii")
        self.bundle = bundle
        self.meta = meta
        self.known = bundle.known_columns()
        self.expected = ", ".join(c.name for c in meta.columns)
        self.dtypes = {c.name: c.dtype for c in meta.columns}
        pii = dict(getattr(masker, "columns", None) or {})
        dropped = set(pii) if getattr(masker, "action", "mask") == "drop" else set()
        self.width = len(featurizer.feature_names_)
        # (column, first output column, width, block) in the Featurizer's order
        self.blocks: list[tuple[str, int, int, Block]] = []
        start = 0
        for column, kind in featurizer.kinds_.items():
            width = _kind_width(featurizer, column, kind)
            if column in dropped:  # the Featurizer never saw it; nothing to compute
                raise Unsupported(f"featurized column {column} is dropped as PII")
            block = _block(featurizer, column, kind, self.dtypes.get(column), pii.get(column))
            self.blocks.append((column, start, width, block))
            start += width
        if start != self.width:
            raise Unsupported(f"feature width {start} != {self.width}")
        self.members = _members(model)
        self.weights = [float(w) for w in model.weights]
        self.total_weight = float(np.sum(model.weights))
        self.calibrate = _calibrator(getattr(model, "calibrator_", None))
        self.classes = list(meta.classes)
        self._class_array = np.asarray(self.classes, dtype=object)

    # -- inputs ---------------------------------------------------------------------------------

    def rows_to_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Values]:
        """The product's rows as one list per column; InvalidInput on unknown columns."""
        for row in rows:
            if not isinstance(row, Mapping):
                raise InvalidInput(f"each instance must be an object of column values, got {row!r}")
        sent: set[str] = set().union(*rows) if rows else set()
        self.check_columns(sent)
        return {c: [row.get(c) for row in rows] for c in sent}

    def check_columns(self, names: Any) -> None:
        unknown = [str(n) for n in names if n not in self.known]
        if unknown:
            listed = ", ".join(f"'{n}'" for n in sorted(unknown))
            raise InvalidInput(f"unknown input column {listed} (the model expects: {self.expected})")

    # -- scoring --------------------------------------------------------------------------------

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> Prediction:
        return self.predict_columns(self.rows_to_columns(rows), len(rows))

    def predict_columns(self, columns: Mapping[str, Sequence[Any]], n: int) -> Prediction:
        """Score a batch given as column -> values (every list of length n)."""
        self.check_columns(columns)
        for name, values in columns.items():
            if len(values) != n:
                raise InvalidInput(f"column '{name}' has {len(values)} values, not {n}")
        X = self.features(columns, n)
        scores, labels = self.decide(X)
        id_column = self.meta.id_column
        ids = list(columns[id_column]) if id_column and id_column in columns else None
        return Prediction(labels, scores, ids)

    def features(self, columns: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """The Featurizer's matrix for the batch."""
        X = np.empty((n, self.width), dtype=np.float64)
        missing: Values = [None] * n
        for column, start, width, block in self.blocks:
            values = columns.get(column)
            X[:, start : start + width] = block(missing if values is None else values).reshape(
                n, width
            )
        return X

    def decide(self, X: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """(scores, labels) as Bundle.predict makes them from the feature matrix."""
        total: np.ndarray | None = None
        for member, weight in zip(self.members, self.weights, strict=True):
            part = weight * member(X)
            total = part if total is None else total + part
        assert total is not None
        blended = total / self.total_weight
        if self.meta.task == "regression":
            values = np.asarray(blended, dtype=float)
            return values, values.tolist()
        proba = blended if self.calibrate is None else self.calibrate(blended)
        proba = np.asarray(proba, dtype=float)
        if len(self.classes) == 2:
            scores = proba[:, 1]
            negative, positive = self.classes
            labels = [positive if s >= self.meta.threshold else negative for s in scores.tolist()]
            return scores, labels
        scores = proba.max(axis=1)
        return scores, self._class_array[proba.argmax(axis=1)].tolist()


def compile_bundle(bundle: Bundle) -> FastPath:
    """Compile `bundle` (Unsupported when its pipeline is not an aiml024 one)."""
    return FastPath(bundle)


# -- columns: typing (Bundle.frame), checks, PII masking, features ------------------------------


def _kind_width(featurizer: Featurizer, column: str, kind: str) -> int:
    if kind == "datetime":
        return len(featurizer.datetime_parts) + 1
    if kind == "text":
        fitted = featurizer.text_[column]
        if fitted is None:
            return 1
        vectorizer, svd = fitted
        return (svd.n_components if svd else len(vectorizer.vocabulary_)) + 1
    return 1


def _block(
    featurizer: Featurizer, column: str, kind: str, dtype: str | None, pii: str | None
) -> Block:
    """The compiled features of one column, or the original code for it as a fallback."""
    fallback = _fallback(featurizer, column, kind, dtype, pii)
    if dtype == "numeric" and kind == "numeric" and pii is None:
        return lambda values: _numeric(column, values)
    if dtype == "boolean" and kind == "boolean" and pii is None:
        return lambda values: _boolean(column, values)
    if dtype == "categorical" and kind in ("categorical", "boolean"):
        mask = value_masker(pii)
        if kind == "categorical":
            levels = featurizer.levels_[column]
            return lambda values: _lookup(levels, _texts_of(values, mask))
        return lambda values: _yes_no(_texts_of(values, mask))
    if dtype == "datetime" and kind == "datetime" and pii is None:
        parts = [_DT_PARTS.get(p) for p in featurizer.datetime_parts]
        if all(part is not None for part in parts):
            reference = featurizer.reference_[column]
            return _datetime_block(column, parts, reference, fallback)  # type: ignore[arg-type]
    if dtype in ("text", "categorical") and kind == "text" and pii in (None, "text"):
        text = _text_block(featurizer.text_[column], pii == "text")
        if text is not None:
            return lambda values: fallback(values) if len(values) > VECTORIZED_ROWS else text(values)
    return fallback


def _numeric(column: str, values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":  # a V2 tensor, a batch
        return values.astype(np.float64)
    if not set(map(type, values)) <= _NUMBER_TYPES:  # one pass in C; the loop only on a miss
        for v in values:
            if isinstance(v, str) or not (v is None or isinstance(v, (int, float, np.number))):
                raise InvalidInput(f"column '{column}' is numeric; got {v!r}")
    return np.array(values, dtype=np.float64)


def _boolean(column: str, values: Values) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v):
            out[i] = np.nan
        elif not isinstance(v, str) and v in (True, False):
            out[i] = 1.0 if v else 0.0
        else:
            raise InvalidInput(f"column '{column}' is boolean; got {v!r}")
    return out


def _as_text(value: Any) -> str | None:
    """features._strings of one value: None for missing; 1 and 1.0 read alike."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if isinstance(value, (float, np.floating)):
        if value != value:
            return None
        return str(int(value)) if float(value).is_integer() else str(float(value))
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def value_masker(pii: str | None) -> Callable[[Any], Any] | None:
    """PiiMasker's mask of one present value (mask_values), or None for a column it skips
    (also what the request log keeps of a PII value: aiml024.runtime.serving)."""
    if pii is None:
        return None
    if pii == "text":
        return lambda v: scrub_text(str(v))
    if pii == "email":

        def email(v: Any) -> str:
            found = _EMAIL_DOMAIN.search(str(v))
            return f"<email>@{found.group(1).lower()}" if found else "<email>"

        return email
    token = TOKENS.get(pii, "<pii>")
    return lambda v: token


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def _texts_of(values: Values, mask: Callable[[Any], Any] | None) -> list[str | None]:
    if mask is not None:
        values = [mask(v) if _present(v) else None for v in values]
    return [_as_text(v) for v in values]


def _lookup(levels: dict[str, int], texts: list[str | None]) -> np.ndarray:
    get = levels.get
    return np.array([np.nan if t is None else get(t, np.nan) for t in texts], dtype=np.float64)


def _yes_no(texts: list[str | None]) -> np.ndarray:
    def one(text: str | None) -> float:
        if text is None:
            return np.nan
        low = text.lower()
        return 1.0 if low in _TRUE else 0.0 if low in _FALSE else np.nan

    return np.array([one(t) for t in texts], dtype=np.float64)


def _datetime_block(
    column: str,
    parts: list[Callable[[datetime], float]],
    reference: Any,
    fallback: Block,
) -> Block:
    ref = None if reference is None else np.datetime64(pd.Timestamp(reference).to_datetime64(), "ns")

    def block(values: Values) -> np.ndarray:
        if len(values) > VECTORIZED_ROWS:
            return fallback(values)
        parsed = [_iso(v) for v in values]
        # Not ISO 8601, or not one layout: pandas takes the format from the first value and
        # reads the others by it, so its parsing (and refusal) it is.
        if any(p is False for p in parsed) or len(_layouts(values)) > 1:
            return fallback(values)
        out = np.full((len(values), len(parts) + 1), np.nan)
        for i, when in enumerate(parsed):
            if when is None:
                continue
            out[i, :-1] = [part(when) for part in parts]  # type: ignore[arg-type]
            if ref is not None:
                stamp = np.datetime64(when, "ns")  # type: ignore[call-overload]
                out[i, -1] = (ref - stamp).astype(np.int64) / _DAY_NS
        return out

    return block


def _layouts(values: Values) -> set[str]:
    return {_DIGIT.sub("0", v) for v in values if type(v) is str}


def _iso(value: Any) -> datetime | None | bool:
    """A naive UTC datetime; None when missing; False when not a plain ISO 8601 string."""
    if not _present(value):
        return None
    if type(value) is not str or not _ISO.match(value):
        return False
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return False
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def _text_block(fitted: Any, scrub: bool) -> Block | None:
    """TF-IDF (+SVD) and the word count of one text column, row by row without pandas."""
    if fitted is None:
        return lambda values: np.array(
            [float(len(t.split())) for t in _plain_texts(values, scrub)], dtype=np.float64
        ).reshape(-1, 1)
    vectorizer, svd = fitted
    if (
        vectorizer.norm not in ("l2", None)
        or vectorizer.binary
        or not vectorizer.use_idf
        or svd is None
        or not hasattr(vectorizer, "idf_")
    ):
        return None
    analyze = vectorizer.build_analyzer()
    vocabulary = vectorizer.vocabulary_
    idf = np.asarray(vectorizer.idf_, dtype=np.float64)
    components = np.asarray(svd.components_, dtype=np.float64)  # (k, terms)
    sublinear, norm = vectorizer.sublinear_tf, vectorizer.norm

    def block(values: Values) -> np.ndarray:
        texts = _plain_texts(values, scrub)
        out = np.zeros((len(texts), components.shape[0] + 1))
        for i, text in enumerate(texts):
            counts = Counter(vocabulary[t] for t in analyze(text) if t in vocabulary)
            if counts:
                index = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
                tf = np.array([counts[j] for j in index], dtype=np.float64)
                if sublinear:
                    tf = np.log(tf) + 1.0
                weights = tf * idf[index]
                if norm == "l2":
                    length = math.sqrt(float(np.dot(weights, weights)))
                    if length > 0:
                        weights = weights / length
                out[i, :-1] = components[:, index] @ weights
            out[i, -1] = float(len(text.split()))
        return out

    return block


def _plain_texts(values: Values, scrub: bool) -> list[str]:
    """features._texts after the PII masker: missing -> ''."""
    texts = []
    for v in values:
        if not _present(v):
            texts.append("")
        else:
            texts.append(scrub_text(str(v)) if scrub else str(v))
    return texts


def _fallback(
    featurizer: Featurizer, column: str, kind: str, dtype: str | None, pii: str | None
) -> Block:
    """The original code for one column: Bundle.frame's typing and checks, the masker, the
    Featurizer; pandas per call, for what the compiler does not do natively."""
    from .pii import mask_values

    def block(values: Values) -> np.ndarray:
        raw = pd.Series(values)
        _check_raw(column, dtype, raw)
        typed = _typed(raw, dtype)
        if pii is not None:
            typed = mask_values(typed, pii)
        frame = pd.DataFrame({column: typed})
        return np.asarray(featurizer._column(frame, column, kind), dtype=np.float64)

    return block


def _check_raw(column: str, dtype: str | None, values: pd.Series) -> None:
    """What Bundle.frame would silently turn into missing (e.g. "abc" -> NaN) is refused."""
    if dtype == "numeric":
        bad = values.map(lambda v: isinstance(v, str))
    elif dtype == "boolean":
        bad = ~values.map(lambda v: v is None or v != v or v in (True, False))
    elif dtype == "datetime":
        bad = pd.to_datetime(values, errors="coerce", utc=True).isna() & values.notna()
    else:
        return
    if bad.any():
        raise InvalidInput(f"column '{column}' is {dtype}; got {values[bad].iloc[0]!r}")


def _typed(values: pd.Series, dtype: str | None) -> pd.Series:
    """Bundle.frame's typing of one column."""
    if dtype == "numeric":
        return pd.to_numeric(values, errors="coerce")
    if dtype == "datetime":
        return pd.to_datetime(values, errors="coerce", utc=True).dt.tz_localize(None)
    if dtype == "boolean":
        return values.astype("boolean").astype("float64")
    return values.astype("object").where(values.notna(), None)


# -- the ensemble ---------------------------------------------------------------------------------


def _members(model: EnsembleEstimator) -> list[Member]:
    return [
        _member(name, fitted, model.task)
        for (name, _, _), fitted in zip(model.members, model.estimators_, strict=True)
    ]


def _member(name: str, fitted: Fitted | Any, task: str) -> Member:
    """learners.infer for one member, through the learner's native predictor when known."""
    learner = get_learner(name)
    if not isinstance(fitted, Fitted):
        return lambda X: infer(learner, fitted, X)
    native = _native(fitted.estimator, task)
    if native is None:
        return lambda X: infer(learner, fitted, X)
    if fitted.log_target:
        return lambda X: np.expm1(np.clip(native(X), -30.0, 700.0))
    return native


def _native(estimator: Any, task: str) -> Member | None:
    """One thread, no sklearn-wrapper checks; the same numbers as Learner.predict."""
    kind = type(estimator).__name__
    if kind in ("LGBMClassifier", "LGBMRegressor"):
        booster = estimator.booster_

        def lightgbm(X: np.ndarray) -> np.ndarray:
            out = np.asarray(booster.predict(X, num_threads=1), dtype=float)
            if task != "regression" and out.ndim == 1:
                return np.vstack((1.0 - out, out)).transpose()
            return out

        return lightgbm
    if kind in ("XGBClassifier", "XGBRegressor") and estimator.objective != "multi:softmax":
        booster = estimator.get_booster()
        booster.set_param({"nthread": 1})
        iterations = estimator._get_iteration_range(None)
        missing = estimator.missing

        def native(X: np.ndarray) -> np.ndarray:
            return booster.inplace_predict(  # type: ignore[no-any-return]
                X, iteration_range=iterations, predict_type="value", missing=missing,
                validate_features=False,
            )  # fmt: skip

        walker = XGBoostTrees.compile(booster, iterations, missing, native)

        def xgboost(X: np.ndarray) -> np.ndarray:
            if walker is not None and len(X) <= WALK_ROWS:
                out = walker(X)
            else:
                out = native(X)
            if task != "regression" and out.ndim == 1:
                out = np.vstack((1.0 - out, out)).transpose()
            return np.asarray(out, dtype=float)

        return xgboost
    if hasattr(estimator, "n_jobs") and kind.endswith(("ForestClassifier", "ForestRegressor",
                                                        "TreesClassifier", "TreesRegressor")):  # fmt: skip
        estimator.n_jobs = 1  # a thread pool per request costs more than it saves
    return None


# -- XGBoost's trees in numpy -------------------------------------------------------------------

# Up to this many rows an XGBoost member walks its trees in numpy (XGBoostTrees); above, the
# booster's own predictor is faster. Both give the same float32 numbers.
WALK_ROWS = 24
_WALKED_OBJECTIVES = ("binary:logistic", "multi:softprob", "reg:squarederror")
_PROBE_ROWS = 512


def _libm_float(name: str) -> Callable[[float], float] | None:
    """The C library's float32 `name` (expf, logf): XGBoost computes its transforms with it,
    and numpy's float32 exp differs from it in the last bit."""
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        function = getattr(libm, name)
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float]
    return function  # type: ignore[no-any-return]


class XGBoostTrees:
    """A gbtree booster's `inplace_predict(predict_type="value")` in numpy, bit for bit, without
    XGBoost's ~0.4 ms fixed cost per call (most of a single-row request).

    XGBoost's semantics: the features cast to float32; at each split `x < split_condition` goes
    left, a missing (NaN) value follows `default_left`; the leaf values of a row's trees added
    one at a time in tree order in float32 onto the intercept (`base_score`, in margin space);
    each class its own trees (`tree_info`); then the objective's transform in float32 with the C
    library's expf (sigmoid `1 / (1 + expf(-x))`; softmax with the sum in double). All trees walk
    at once, one depth level per step: a missing value is made +inf or -inf per split (a second
    copy of the features, chosen by the split's feature index) so it lands on its default side.

    `compile` returns None for what this does not know (another booster or objective, categorical
    splits, vector leaves, a `missing` other than NaN) and for a booster whose predictions on
    probe rows (split values, their neighbours, NaNs) differ from XGBoost's in any bit: the member
    then stays on XGBoost."""

    def __init__(self, document: dict[str, Any], iterations: tuple[int, int]):
        learner = document["learner"]
        if learner["gradient_booster"].get("name") != "gbtree":
            raise Unsupported("not a gbtree booster")
        self.objective = str(learner["objective"]["name"])
        if self.objective not in _WALKED_OBJECTIVES:
            raise Unsupported(f"objective {self.objective}")
        param = learner["learner_model_param"]
        if int(param.get("num_target", 1)) != 1:
            raise Unsupported("multi-target trees")
        self.features = int(param["num_feature"])
        self.classes = max(int(param.get("num_class", 0)), 1)
        model = learner["gradient_booster"]["model"]
        indptr = [int(i) for i in model["iteration_indptr"]]
        begin, end = iterations
        if end <= 0:
            end = len(indptr) - 1
        first, last = indptr[begin], indptr[min(end, len(indptr) - 1)]
        trees = model["trees"][first:last]
        group = np.asarray(model["tree_info"][first:last], dtype=np.int64)
        self.intercept = self._intercept(param["base_score"])
        feature, condition, child, leaf, roots, split = [], [], [], [], [], []
        offset, depth = 0, 0
        for tree in trees:
            if any(int(t) != 0 for t in tree["split_type"]):
                raise Unsupported("categorical splits")
            if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
                raise Unsupported("vector leaves")
            left = np.asarray(tree["left_children"], dtype=np.int64)
            right = np.asarray(tree["right_children"], dtype=np.int64)
            ids = np.arange(len(left))
            is_leaf = left == -1
            values = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32)
            default_left = np.asarray(tree["default_left"], dtype=bool)
            index = np.asarray(tree["split_indices"], dtype=np.int64)
            # A split reads column index (+ features when missing goes left: the -inf copy).
            feature.append(np.where(is_leaf, 0, index + self.features * default_left))
            condition.append(np.where(is_leaf, np.float32(np.inf), values))
            # A leaf is its own child, so every tree may take the deepest tree's steps.
            pairs = np.stack([np.where(is_leaf, ids, left), np.where(is_leaf, ids, right)], 1)
            child.append((pairs + offset).ravel())
            leaf.append(np.where(is_leaf, values, np.float32(0)))
            split.append(~is_leaf)
            roots.append(offset)
            depth = max(depth, _tree_depth(left, right))
            offset += len(left)
        if not trees:
            raise Unsupported("no trees")
        self.feature = np.concatenate(feature)
        self.condition = np.concatenate(condition).astype(np.float32)
        self.child = np.concatenate(child)
        self.leaf = np.concatenate(leaf).astype(np.float32)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.split = np.concatenate(split)
        # Doubled for the walk: node i at 2i, its left child's slot at 2i and right at 2i + 1.
        self.feature2 = np.repeat(self.feature, 2)
        self.condition2 = np.repeat(self.condition, 2)
        self.child2 = 2 * self.child
        self.leaf2 = np.repeat(self.leaf, 2)
        self.depth = depth
        # Each class's trees, in tree order (one class for binary and regression).
        self.groups = [np.flatnonzero(group == k) for k in range(self.classes)]

    def _intercept(self, text: str) -> np.ndarray:
        values = np.asarray(json.loads(text), dtype=np.float64).astype(np.float32).reshape(-1)
        if self.objective == "binary:logistic":  # stored as a probability
            if len(values) != 1 or _LOGF is None:
                raise Unsupported("binary intercept")
            p = values[0]
            values = np.asarray([-_LOGF(float(np.float32(1.0) / p - np.float32(1.0)))],
                                dtype=np.float32)  # fmt: skip
        if len(values) == 1 and self.classes > 1:
            values = np.repeat(values, self.classes)
        if len(values) != self.classes:
            raise Unsupported(f"{len(values)} intercepts for {self.classes} classes")
        return values

    @classmethod
    def compile(
        cls,
        booster: Any,
        iterations: tuple[int, int],
        missing: Any,
        native: Callable[[np.ndarray], np.ndarray],
    ) -> XGBoostTrees | None:
        if _EXPF is None or not (isinstance(missing, float) and missing != missing):
            return None
        try:
            walker = cls(json.loads(booster.save_raw("json")), iterations)
        except (Unsupported, KeyError, TypeError, ValueError):
            return None
        probe = walker.probe()
        expected = np.asarray(native(probe))
        got = np.concatenate([walker(probe[i : i + WALK_ROWS])
                              for i in range(0, len(probe), WALK_ROWS)])  # fmt: skip
        if got.shape != expected.shape or got.dtype != expected.dtype:
            return None
        if not np.array_equal(got.view(np.uint32), expected.view(np.uint32)):
            return None
        return walker

    def probe(self) -> np.ndarray:
        """Rows made of the booster's own split values, their float32 neighbours and NaNs."""
        rng = np.random.default_rng(0)
        columns = self.feature[self.split] % self.features
        values = self.condition[self.split]
        X = rng.normal(0.0, 1.0, (_PROBE_ROWS, self.features)).astype(np.float32)
        for j in range(self.features):
            at = values[columns == j]
            if len(at):
                X[:, j] = rng.choice(at, _PROBE_ROWS)
        step = rng.integers(-1, 2, X.shape)  # the value itself or the next float either side
        X = np.where(step < 0, np.nextafter(X, np.float32(-np.inf)),
                     np.where(step > 0, np.nextafter(X, np.float32(np.inf)), X))  # fmt: skip
        X[rng.random(X.shape) < 0.15] = np.nan
        return X.astype(np.float64)

    def margins(self, X: np.ndarray) -> np.ndarray:
        """(rows, classes) float32 margins, summed as XGBoost sums them."""
        n, width = X.shape
        if width != self.features:
            raise ValueError(f"{width} features, the booster takes {self.features}")
        values = X.astype(np.float32)
        missing = np.isnan(values)
        both = np.empty((n, 2 * width), dtype=np.float32)
        both[:, :width] = values
        both[:, width:] = values
        both[:, :width][missing] = np.inf  # missing goes right: x < condition is false
        both[:, width:][missing] = -np.inf  # missing goes left: x < condition is true
        flat = both.ravel()
        # Node i of the forest is at 2i: `child` holds 2 * child, so a step is one lookup.
        node = np.tile(2 * self.roots, n)
        base = np.repeat(np.arange(n, dtype=np.int64) * (2 * width), len(self.roots))
        feature, condition, child = self.feature2, self.condition2, self.child2
        for _ in range(self.depth):
            x = flat.take(feature.take(node) + base)
            node = child.take(node + (x >= condition.take(node)))
        leaves = self.leaf2.take(node).reshape(n, len(self.roots))
        out = np.empty((n, self.classes), dtype=np.float32)
        for k, trees in enumerate(self.groups):
            terms = np.empty((n, len(trees) + 1), dtype=np.float32)
            terms[:, 0] = self.intercept[k]
            terms[:, 1:] = leaves[:, trees]
            out[:, k] = np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]  # in order, float32
        return out

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """What `inplace_predict(X, predict_type="value")` returns: float32, (rows,) or
        (rows, classes)."""
        margin = self.margins(X)
        if self.objective == "reg:squarederror":
            return margin[:, 0]
        if self.objective == "binary:logistic":
            exp = _exp32(-margin[:, 0])
            return np.float32(1.0) / (np.float32(1.0) + exp)
        shifted = margin - margin.max(axis=1, keepdims=True)
        exp = _exp32(shifted.ravel()).reshape(shifted.shape)
        total = np.cumsum(exp.astype(np.float64), axis=1)[:, -1]  # a double, in class order
        return exp / total.astype(np.float32)[:, None]


def _exp32(values: np.ndarray) -> np.ndarray:
    expf = _EXPF
    assert expf is not None
    return np.fromiter((expf(v) for v in values.tolist()), dtype=np.float32, count=len(values))


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if left[node] != -1:
            stack += [(int(left[node]), depth + 1), (int(right[node]), depth + 1)]
    return deepest


_EXPF = _libm_float("expf")
_LOGF = _libm_float("logf")


def _calibrator(calibrator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """calibration.ProbabilityCalibrator.calibrate without sklearn's per-call checks."""
    if calibrator is None:
        return None
    model = calibrator.model
    if calibrator.method == "sigmoid" and np.shape(model.coef_) == (1, 1):
        from scipy.special import expit

        from .calibration import _logit

        coef, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])

        def sigmoid(proba: np.ndarray) -> np.ndarray:
            p1 = expit(_logit(proba[:, 1]) * coef + intercept)
            return np.column_stack([1.0 - p1, p1])

        return sigmoid
    return calibrator.calibrate  # type: ignore[no-any-return]
