"""Feature engineering from the validated column types to one dense float matrix.

`Featurizer` is a scikit-learn transformer fit on training rows only (the search fits one per
fold). Every learner gets the same matrix, so GBMs see NaN for missing values and linear learners
impute. The output column names are stable: `col`, `col__<part>`, `col__svd<i>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

DEFAULT_DATETIME_PARTS = ("year", "month", "dayofweek", "dayofyear")
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}
_DAY = np.timedelta64(1, "D")
_DT_ACCESSORS = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}


class StableTfidfVectorizer(TfidfVectorizer):
    """TfidfVectorizer that pickles the same bytes for the same fit. scikit-learn caches the
    id() of the stop-word list it last checked (`_stop_words_id`, set again on every
    transform): a memory address that would make the bundle, and so its digest, differ between
    identical runs. Left out of the pickle, it is recomputed on the next transform."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_stop_words_id", None)
        return state


class Featurizer(TransformerMixin, BaseEstimator):
    """Column types -> dense float features.

    types: column -> numeric | categorical | datetime | text | boolean | id (id is dropped).
    Columns absent from `types`, and those in `drop_columns`, are ignored; columns missing at
    transform time read as missing values.
    """

    def __init__(
        self,
        types: dict[str, str] | None = None,
        text_columns: Sequence[str] = (),
        datetime_parts: Sequence[str] = DEFAULT_DATETIME_PARTS,
        drop_columns: Sequence[str] = (),
        text_max_features: int = 500,
        text_components: int = 24,
        max_levels: int = 256,
        min_level_count: int = 2,
    ):
        self.types = types
        self.text_columns = text_columns
        self.datetime_parts = datetime_parts
        self.drop_columns = drop_columns
        self.text_max_features = text_max_features
        self.text_components = text_components
        self.max_levels = max_levels
        self.min_level_count = min_level_count

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: Any = None) -> Featurizer:
        kinds = column_kinds(self.types or {}, self.text_columns, self.drop_columns)
        self.kinds_: dict[str, str] = {c: k for c, k in kinds.items() if c in X.columns}
        self.levels_: dict[str, dict[str, int]] = {}
        self.reference_: dict[str, np.datetime64 | None] = {}
        self.text_: dict[str, Any] = {}
        for column, kind in self.kinds_.items():
            if kind == "categorical":
                self.levels_[column] = self._fit_levels(X[column])
            elif kind == "datetime":
                parsed = _datetimes(X[column])
                self.reference_[column] = parsed.max() if parsed.notna().any() else None
            elif kind == "text":
                self.text_[column] = self._fit_text(_texts(X[column]))
        self.feature_names_ = self._names()
        return self

    def _fit_levels(self, values: pd.Series) -> dict[str, int]:
        counts = _strings(values).dropna().value_counts()
        counts = counts[counts >= self.min_level_count]
        # Most frequent first, ties by name: the code itself carries frequency, deterministically.
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_levels]
        return {level: code for code, (level, _) in enumerate(ordered)}

    def _fit_text(
        self, texts: pd.Series
    ) -> tuple[StableTfidfVectorizer, TruncatedSVD | None] | None:
        vectorizer = StableTfidfVectorizer(
            max_features=self.text_max_features,
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=2 if len(texts) >= 50 else 1,
            dtype=np.float64,
        )
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # empty vocabulary: nothing to learn from this column
            return None
        n_terms = matrix.shape[1]
        if n_terms <= 2:
            return vectorizer, None
        svd = TruncatedSVD(n_components=min(self.text_components, n_terms - 1), random_state=0)
        svd.fit(matrix)
        return vectorizer, svd

    def _names(self) -> list[str]:
        names: list[str] = []
        for column, kind in self.kinds_.items():
            if kind == "datetime":
                parts = [*self.datetime_parts, "days_since"]
                names += [f"{column}__{part}" for part in parts]
            elif kind == "text":
                fitted = self.text_[column]
                width = 0
                if fitted is not None:
                    vectorizer, svd = fitted
                    width = svd.n_components if svd else len(vectorizer.vocabulary_)
                names += [f"{column}__svd{i}" for i in range(width)] + [f"{column}__words"]
            else:
                names.append(column)
        return names

    # -- transforming -------------------------------------------------------------------------

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        blocks = [self._column(X, column, kind) for column, kind in self.kinds_.items()]
        if not blocks:
            return np.zeros((len(X), 0))
        return np.column_stack(blocks).astype(np.float64)

    def _column(self, X: pd.DataFrame, column: str, kind: str) -> np.ndarray:
        values = X[column] if column in X.columns else pd.Series(np.nan, index=X.index)
        if kind == "numeric":
            return _numbers(values)
        if kind == "boolean":
            return _booleans(values)
        if kind == "categorical":
            levels = self.levels_[column]
            return _strings(values).map(levels).to_numpy(dtype=np.float64, na_value=np.nan)
        if kind == "datetime":
            return self._datetime(values, self.reference_[column])
        return self._text(values, self.text_[column])

    def _datetime(self, values: pd.Series, reference: np.datetime64 | None) -> np.ndarray:
        parsed = _datetimes(values)
        parts = [
            getattr(parsed.dt, _DT_ACCESSORS.get(part, part)).to_numpy(np.float64, na_value=np.nan)
            for part in self.datetime_parts
        ]
        if reference is None:
            since = np.full(len(values), np.nan)
        else:
            since = ((reference - parsed) / _DAY).to_numpy(dtype=np.float64, na_value=np.nan)
        return np.column_stack([*parts, since])

    def _text(self, values: pd.Series, fitted: Any) -> np.ndarray:
        texts = _texts(values)
        words = texts.str.split().str.len().to_numpy(dtype=np.float64)
        if fitted is None:
            return words.reshape(-1, 1)
        vectorizer, svd = fitted
        matrix = vectorizer.transform(texts)
        dense = svd.transform(matrix) if svd is not None else matrix.toarray()
        return np.column_stack([dense, words])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.feature_names_, dtype=object)


def column_kinds(
    types: dict[str, str], text_columns: Sequence[str] = (), drop_columns: Sequence[str] = ()
) -> dict[str, str]:
    """The feature kind of each usable column (id and dropped columns left out)."""
    kinds = {}
    for column, kind in types.items():
        if column in drop_columns or kind == "id":
            continue
        kinds[column] = "text" if column in text_columns else kind
    for column in text_columns:
        if column not in drop_columns:
            kinds.setdefault(column, "text")
    return kinds


def _numbers(values: pd.Series) -> np.ndarray:
    if values.dtype == bool:
        values = values.astype(float)
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def _booleans(values: pd.Series) -> np.ndarray:
    text = _strings(values).str.lower()
    mapped = np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan))
    return mapped.astype(np.float64)


def _strings(values: pd.Series) -> pd.Series:
    """Values as strings, missing as NA; 1 and 1.0 read alike."""
    out = values.astype(object).where(values.notna(), None)
    return out.map(_as_text, na_action="ignore").astype(object)


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    return str(value)


def _texts(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").astype(str)


def _datetimes(values: pd.Series) -> pd.Series:
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        values = values.astype(object).where(values.notna(), None)
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    else:
        parsed = pd.to_datetime(values, utc=True)
    return parsed.dt.tz_localize(None)
