"""Reading tables from any fsspec URI, inferring column types, fingerprinting a dataset.

Pure functions over pandas frames; the only side effect is reading the URI. Errors a user can
fix (a wrong URI, a missing backend, an empty or unparseable file, repeated column headers)
raise StepError with the URI in the message.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import fsspec
import numpy as np
import pandas as pd
from fsspec.registry import known_implementations

from .errors import StepError

if TYPE_CHECKING:
    from aiml024.api import ExperimentSpec

ColumnType = Literal["numeric", "categorical", "datetime", "text", "boolean", "id"]
Format = Literal["auto", "csv", "parquet"]

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ","}
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# pip packages for the backends aiml024 ships as extras; others are named by fsspec itself.
_EXTRAS = {"s3fs": "aiml024[s3]", "gcsfs": "aiml024[gcs]"}

# Thresholds of type inference, on the non-missing values of a column.
DATETIME_PARSE_SHARE = 0.9  # share of values that look like and parse as dates
ID_UNIQUE_SHARE = 0.95  # distinct share above which a string column is an identifier
TEXT_MIN_WORDS = 3.0  # mean words per value for free text
TEXT_MIN_DISTINCT = 50  # fewer distinct phrases than this are categories, not text

# Date-like strings only: dateutil alone would read "1.2.3" or "415-555-0134" as dates.
_DATE_RE = re.compile(
    r"^\s*(?:"
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 2024-01-31, 2024/1/31
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"  # 31/01/2024, 1-31-24
    r"|\d{1,2}\s+[A-Za-z]{3,9}\.?,?\s+\d{4}"  # 31 Jan 2024
    r"|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4}"  # January 31, 2024
    r")(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2}|UTC)?)?\s*$"
)
_RENAMED_RE = re.compile(r"^(.*)\.\d+$")  # read_csv's name for a repeated header
_ID_NAME_RE = re.compile(r"(^|_)id$|^id_|uuid|guid", re.IGNORECASE)


def listing(names: list[str], limit: int = 30) -> str:
    """'a, b, c' or 'a, b, ... (40 in all)'."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def missing_column_hint(column: str, available: list[str]) -> str:
    """The tail of a message about a column the data lacks: a close match, then the columns
    ("; did you mean 'churned'? (available columns: ...)")."""
    lowered = {c.lower(): c for c in available}
    close = difflib.get_close_matches(column, available, n=3, cutoff=0.6)
    if column.lower() in lowered and lowered[column.lower()] not in close:
        close.insert(0, lowered[column.lower()])
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (available columns: {listing(available) or 'none'})"


def _positions(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def duplicate_headers(names: list[str]) -> str | None:
    """'a (columns 1 and 3), b (columns 2, 4 and 5)' for repeated names (counted from 1), or
    None. Blank headers are not names (pandas calls them 'Unnamed: N') and never repeat."""
    seen: dict[str, list[int]] = {}
    for number, name in enumerate(names, start=1):
        if name.strip():
            seen.setdefault(name, []).append(number)
    repeated = [f"{name} (columns {_positions(at)})" for name, at in seen.items() if len(at) > 1]
    return ", ".join(repeated) if repeated else None


def _duplicates_error(uri: str, names: list[str]) -> StepError | None:
    repeated = duplicate_headers(names)
    if repeated is None:
        return None
    return StepError(
        f"data.uri {uri} has duplicate column headers: {repeated}; give each column its own name"
    )


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text or type(error).__name__


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    protocol, _ = fsspec.core.split_protocol(uri)
    if protocol and "::" not in uri and protocol not in fsspec.available_protocols():
        raise StepError(
            f"cannot read data.uri {uri}: unknown scheme {protocol}://; use a path, file://, "
            "s3://, gs:// or memory://"
        )
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as error:
        impl = known_implementations.get(protocol or "", {}).get("class", "")
        package = impl.split(".")[0] if impl else ""
        if package:
            install = _EXTRAS.get(package, package)
            raise StepError(
                f"cannot read data.uri {uri}: the {protocol}:// backend needs the package "
                f"{package}, which is not installed (pip install '{install}')"
            ) from None
        raise StepError(f"cannot read data.uri {uri}: {_reason(error)}") from None
    except Exception as error:  # credentials, bad bucket names, ...: the backend says why
        raise StepError(f"cannot read data.uri {uri}: {_reason(error)}") from None
    return fs, str(path)


def _strip_compression(path: str) -> str:
    lowered = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lowered.endswith(suffix):
            return lowered[: -len(suffix)]
    return lowered


def _format_of(fs: fsspec.AbstractFileSystem, path: str, fmt: Format) -> str:
    if fmt != "auto":
        return fmt
    bare = _strip_compression(path)
    if bare.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if any(bare.endswith(suffix) for suffix in _CSV_SUFFIXES):
        return "csv"
    # No telling suffix: Parquet files start with the magic bytes PAR1.
    with fs.open(path, "rb") as handle:
        return "parquet" if handle.read(4) == b"PAR1" else "csv"


def read_table(uri: str, fmt: Format = "auto") -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file, or a Parquet directory, from a URI."""
    fs, path = _filesystem(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise StepError(f"cannot read data.uri {uri}: no such file or object") from None
    except Exception as error:
        raise StepError(f"cannot read data.uri {uri}: {_reason(error)}") from None

    is_dir = info.get("type") == "directory"
    if not is_dir and not info.get("size"):
        raise StepError(f"data.uri {uri} is an empty file (0 bytes)")
    kind = "parquet" if is_dir else _format_of(fs, path, fmt)
    sep = _CSV_SUFFIXES.get("." + _strip_compression(path).rsplit(".", 1)[-1], ",")
    try:
        if kind == "parquet":
            if is_dir:
                return pd.read_parquet(path, filesystem=fs)
            with fs.open(path, "rb") as handle:
                return pd.read_parquet(handle)
        with fs.open(path, "rb", compression="infer") as handle:
            df = pd.read_csv(handle, sep=sep, low_memory=False)
    except pd.errors.EmptyDataError:
        raise StepError(f"data.uri {uri} is empty: no header and no rows") from None
    except Exception as error:  # parser, decoding, decompression and Arrow errors alike
        # Arrow refuses a schema with a repeated field name in its own words: say which.
        repeated = (
            _duplicates_error(uri, _parquet_names(fs, path, is_dir)) if kind == "parquet" else None
        )
        if repeated is not None:
            raise repeated from None
        raise StepError(f"cannot parse data.uri {uri} as {kind}: {_reason(error)}") from None
    if _maybe_renamed(df.columns):
        repeated = _duplicates_error(uri, _csv_header(fs, path, sep))
        if repeated is not None:
            raise repeated
    return df


def _maybe_renamed(columns: pd.Index) -> bool:
    """Whether pandas may have renamed a repeated CSV header: 'a', 'a.1' (its only trace)."""
    names = {str(c) for c in columns}
    return any(
        (match := _RENAMED_RE.match(name)) is not None and match.group(1) in names for name in names
    )


def _csv_header(fs: fsspec.AbstractFileSystem, path: str, sep: str) -> list[str]:
    """The header row as written (read_csv renames a repeated name 'a' to 'a.1')."""
    with fs.open(path, "rb", compression="infer") as handle:
        row = pd.read_csv(handle, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(v) for v in row.iloc[0]] if len(row) else []


def _parquet_names(fs: fsspec.AbstractFileSystem, path: str, is_dir: bool) -> list[str]:
    """The column names of a Parquet file (of the first file of a directory); [] if unreadable."""
    try:
        if is_dir:
            files = sorted(
                p
                for p in fs.find(path)
                if not any(part.startswith(("_", ".")) for part in p[len(path) :].split("/"))
            )
            if not files:
                return []
            path = files[0]
        import pyarrow.parquet as pq  # only on this error path

        with fs.open(path, "rb") as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    except Exception:  # not Parquet after all: the caller reports the original error
        return []


def _sample(values: pd.Series, size: int) -> pd.Series:
    return values.sample(size, random_state=0) if len(values) > size else values


def _is_bool(value: object) -> bool:
    return isinstance(value, bool | np.bool_)


def _looks_like_dates(values: pd.Series) -> bool:
    text = values.astype(str)
    if text.str.match(_DATE_RE).mean() < DATETIME_PARSE_SHARE:
        return False
    return bool(to_datetime(text).notna().mean() >= DATETIME_PARSE_SHARE)


def _string_type(values: pd.Series, sample: int) -> ColumnType:
    """Type of an object/string column from its non-missing values."""
    if pd.api.types.is_object_dtype(values.dtype) and values.map(_is_bool).all():
        return "boolean"
    head = _sample(values, sample)
    if _looks_like_dates(head):
        return "datetime"
    text = head.astype(str)
    distinct = values.nunique()
    if (
        distinct >= TEXT_MIN_DISTINCT
        and text.str.contains(r"\s", regex=True).mean() >= 0.5
        and text.str.split().str.len().mean() >= TEXT_MIN_WORDS
    ):
        return "text"
    if len(values) >= 20 and distinct / len(values) >= ID_UNIQUE_SHARE:
        return "id"
    return "categorical"


def column_type(
    series: pd.Series, *, is_text: bool = False, is_target: bool = False, sample: int = 2000
) -> ColumnType:
    """The inferred type of one column (see infer_types)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype):
        values = series.dropna()
        integral = pd.api.types.is_integer_dtype(dtype)
        # Row numbers and surrogate keys carry no signal, only leakage of the row order.
        if (
            not is_target
            and integral
            and _ID_NAME_RE.search(str(series.name))
            and len(values) >= 20
            and values.is_unique
        ):
            return "id"
        return "numeric"
    values = series.dropna()
    if values.empty:
        return "categorical"
    kind = _string_type(values, sample)
    if is_text and kind != "datetime":
        return "text"
    if is_target and kind in ("text", "id", "datetime"):
        return "categorical"
    return kind


def infer_types(df: pd.DataFrame, spec: ExperimentSpec | None = None) -> dict[str, ColumnType]:
    """Map each column to numeric, categorical, datetime, text, boolean or id.

    - spec.idColumn is "id"; spec.features.textColumns are "text";
    - datetime: string columns whose values look like and parse as dates (>= 90%);
    - text: strings with spaces, several words per value and many distinct values;
    - id: strings that are (nearly) all distinct, or unique integers named like an id.
      Identifiers are excluded from the features.
    """
    text_columns = set(spec.features.text_columns) if spec else set()
    id_column = spec.id_column if spec else None
    target = spec.target if spec else None
    types: dict[str, ColumnType] = {}
    for name in df.columns:
        key = str(name)
        if key == id_column:
            types[key] = "id"
            continue
        types[key] = column_type(df[name], is_text=key in text_columns, is_target=key == target)
    return types


def to_datetime(values: pd.Series) -> pd.Series:
    """Parse to naive UTC timestamps, as the model server does; unparseable values become NaT."""
    parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
    return parsed.dt.tz_localize(None)


def apply_types(df: pd.DataFrame, types: dict[str, ColumnType]) -> pd.DataFrame:
    """A copy with datetime-typed string columns parsed, so later steps read typed columns."""
    out = df.copy()
    for name, kind in types.items():
        if kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(out[name].dtype):
            out[name] = to_datetime(out[name])
    return out


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """sha256 of column names, dtypes and row contents; stable across runs and row index."""
    digest = hashlib.sha256()
    for name, dtype in zip(df.columns, df.dtypes, strict=True):
        digest.update(f"{name}\x1f{dtype}\x1e".encode())
    try:
        rows = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable cells (lists, dicts from Parquet): hash their text
        rows = pd.util.hash_pandas_object(df.astype(str), index=False)
    digest.update(rows.to_numpy().astype("<u8").tobytes())
    return digest.hexdigest()


def _text_or_missing(value: object) -> object:
    return value if value is None or pd.isna(value) is True else str(value)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write df; object columns of mixed Python types are stored as text rather than failing."""
    try:
        df.to_parquet(path, index=False)
    except (TypeError, ValueError):  # pyarrow's ArrowTypeError / ArrowInvalid
        mixed = df.copy()
        for name in mixed.columns:
            if pd.api.types.is_object_dtype(mixed[name].dtype):
                mixed[name] = mixed[name].map(_text_or_missing)
        mixed.to_parquet(path, index=False)
