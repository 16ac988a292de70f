"""Data expectations (spec.expectations) as a pandera schema, and its failures as sentences.

Pure: `expectation_schema` turns the spec's expectations into a pandera DataFrameSchema;
`check_expectations` validates a frame against it (lazily, so every failure is found in one
pass) and returns one readable `Violation` per failed check, naming the column, the check (as
the spec spells it: dtype, min, max, nullable, unique, allowedValues) and a few failing values.

The validate step checks the data as ingested: before it drops rows without a target, and
before PII masking or dropping, so an expectation speaks of the values the user supplied.

What each expectation means, on the values as read (nulls are only the business of
`nullable`; every other check looks at the values present):

- the column must exist: an expectation naming a column that is not in the data is violated;
- dtype numeric: every value is a number, or text that reads as one ("12.5"); never a boolean;
- dtype string: every value is text (a CSV column of digits reads as numbers and fails);
- dtype boolean: every value is true or false (not 0/1, not "yes");
- dtype datetime: every value is a timestamp, or text that parses as a date;
- min / max: every value is a number within the bounds (a value that is not a number fails
  too, unless the column's expectation also has dtype numeric, which reports it once);
- nullable false: no value is missing;
- unique: no value occurs twice (missing values are not compared);
- allowedValues: every value is one of the list, compared as it is or as its text, so a
  CSV column read as the numbers 1, 2 (or 1.0, 2.0, with gaps) meets allowedValues ["1", "2"].

Row numbers in a report are data rows counted from 1 (the first row after a CSV header).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .data import missing_column_hint, to_datetime

if TYPE_CHECKING:
    from aiml024.api.experiment import Expectation

EXAMPLES = 5  # distinct failing values shown per violation
ROWS_SHOWN = 5  # data row numbers shown for missing values

_DTYPE_WORDS = {
    "numeric": "numbers",
    "string": "text",
    "boolean": "true/false values",
    "datetime": "dates",
}


@dataclass(frozen=True)
class Violation:
    """One failed check: `message` is what the user reads; the rest is for the report."""

    column: str
    check: str  # column, dtype, min, max, nullable, unique, allowedValues
    message: str
    failing_rows: int = 0
    examples: list[Any] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # data rows, counted from 1

    def wire(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "check": self.check,
            "message": self.message,
            "failingRows": self.failing_rows,
            "examples": [_plain(v) for v in self.examples],
            "rows": self.rows,
        }


@dataclass(frozen=True)
class _CheckInfo:
    """What one pandera check of a column stands for, to word its failures."""

    check: str  # the spec's name of it
    label: str  # as shown in the message: "min: 0", "dtype: numeric"
    failing: str  # "values that are not numbers", before the examples


# -- values ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars; timestamps -> ISO text (the report is JSON)."""
    if isinstance(value, pd.Timestamp | datetime | date | np.datetime64):
        return str(pd.Timestamp(value))
    return value.item() if hasattr(value, "item") else value


def _show(value: Any) -> str:
    plain = _plain(value)
    if isinstance(plain, float) and math.isfinite(plain):
        return f"{plain:g}" if abs(plain) < 1e15 else repr(plain)
    return repr(plain)


def _bound(value: float) -> str:
    return f"{value:g}"


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _number(value: Any) -> float:
    """The value as a float, or NaN when it is not a number (booleans are not numbers)."""
    if _is_bool(value):
        return math.nan
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    return math.nan


def _as_numbers(values: pd.Series) -> pd.Series:
    """Floats, NaN where a value is not a number."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(math.nan, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64")
    return values.map(_number).astype("float64")


def _is_number(values: pd.Series) -> pd.Series:
    numbers_ = _as_numbers(values)
    return numbers_.notna() & ~np.isinf(numbers_)


def _is_text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: isinstance(v, str)).astype(bool)


def _is_boolean(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return pd.Series(True, index=values.index)
    return values.map(_is_bool).astype(bool)


def _is_date(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return pd.Series(True, index=values.index)
    stamps = values.map(lambda v: isinstance(v, pd.Timestamp | datetime | date | np.datetime64))
    texts = values.map(lambda v: isinstance(v, str)).astype(bool)
    parsed = pd.Series(False, index=values.index)
    if texts.any():
        parsed[texts] = to_datetime(values[texts].astype(str)).notna()
    return stamps.astype(bool) | parsed


_DTYPE_TESTS = {
    "numeric": _is_number,
    "string": _is_text,
    "boolean": _is_boolean,
    "datetime": _is_date,
}


def _in_range(
    low: float | None, high: float | None, skip_non_numbers: bool
) -> Callable[[pd.Series], pd.Series]:
    def test(values: pd.Series) -> pd.Series:
        numbers_ = _as_numbers(values)
        ok = numbers_.notna()
        if low is not None:
            ok &= numbers_ >= low
        if high is not None:
            ok &= numbers_ <= high
        return ok | numbers_.isna() if skip_non_numbers else ok

    return test


def _text(value: Any) -> str:
    """A value as the spec would write it: 1.0 (an integer column with gaps) reads "1"."""
    plain = _plain(value)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, float) and plain.is_integer():
        return str(int(plain))
    return str(plain)


def _allowed(allowed: Sequence[Any]) -> Callable[[pd.Series], pd.Series]:
    texts = {_text(v) for v in allowed}

    def test(values: pd.Series) -> pd.Series:
        same = values.isin(list(allowed))
        as_text = values.map(lambda v: _text(v) in texts).astype(bool)
        return same | as_text

    return test


# -- the schema ------------------------------------------------------------------------------


def _range_info(low: float | None, high: float | None) -> _CheckInfo:
    if low is not None and high is not None:
        return _CheckInfo(
            "min/max",
            f"min: {_bound(low)}, max: {_bound(high)}",
            f"values that are not numbers between {_bound(low)} and {_bound(high)}",
        )
    if low is not None:
        return _CheckInfo(
            "min", f"min: {_bound(low)}", f"values that are not numbers >= {_bound(low)}"
        )
    assert high is not None
    return _CheckInfo(
        "max", f"max: {_bound(high)}", f"values that are not numbers <= {_bound(high)}"
    )


def _listed(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(_plain(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _column_checks(group: list[Expectation]) -> tuple[list[pa.Check], list[_CheckInfo]]:
    checks: list[pa.Check] = []
    infos: list[_CheckInfo] = []
    declared_numeric = any(e.dtype == "numeric" for e in group)
    for expectation in group:
        if expectation.dtype is not None:
            info = _CheckInfo(
                "dtype",
                f"dtype: {expectation.dtype}",
                f"values that are not {_DTYPE_WORDS[expectation.dtype]}",
            )
            checks.append(pa.Check(_DTYPE_TESTS[expectation.dtype], error=info.label))
            infos.append(info)
        if expectation.min is not None or expectation.max is not None:
            info = _range_info(expectation.min, expectation.max)
            test = _in_range(expectation.min, expectation.max, declared_numeric)
            checks.append(pa.Check(test, error=info.label))
            infos.append(info)
        if expectation.allowed_values is not None:
            allowed = expectation.allowed_values
            info = _CheckInfo(
                "allowedValues",
                f"allowedValues: {_listed(allowed)}",
                "values not in the list",
            )
            checks.append(pa.Check(_allowed(allowed), error=info.label))
            infos.append(info)
    return checks, infos


def _grouped(expectations: Iterable[Expectation]) -> dict[str, list[Expectation]]:
    """Expectations by column, in the spec's order (one column may have several)."""
    groups: dict[str, list[Expectation]] = {}
    for expectation in expectations:
        groups.setdefault(expectation.column, []).append(expectation)
    return groups


def _schema_and_infos(
    expectations: Iterable[Expectation],
) -> tuple[pa.DataFrameSchema, dict[str, list[_CheckInfo]]]:
    columns: dict[str, pa.Column] = {}
    infos: dict[str, list[_CheckInfo]] = {}
    for name, group in _grouped(expectations).items():
        checks, infos[name] = _column_checks(group)
        columns[name] = pa.Column(
            None,  # any dtype: the dtype expectation is a check, so it can name the values
            checks=checks,
            nullable=all(e.nullable for e in group),
            unique=any(e.unique for e in group),
            required=True,
            name=name,
        )
    return pa.DataFrameSchema(columns, strict=False, ordered=False), infos


def expectation_schema(expectations: Iterable[Expectation]) -> pa.DataFrameSchema:
    """The pandera schema of spec.expectations (columns not named are not checked)."""
    return _schema_and_infos(expectations)[0]


# -- the failures, worded --------------------------------------------------------------------


def _missing_column(column: str, available: list[str]) -> Violation:
    hint = missing_column_hint(column, available)
    return Violation(
        column=column,
        check="column",
        message=f"expectation on column {column!r} failed: the data has no such column{hint}",
    )


def _counted(failures: pd.DataFrame) -> list[tuple[Any, int]]:
    """Distinct failing values with their row counts, most frequent first (then first seen)."""
    counts: dict[Any, int] = {}
    keys: dict[Any, Any] = {}
    for value in failures["failure_case"]:
        plain = _plain(value)
        try:
            key = (type(plain).__name__, plain)
            hash(key)
        except TypeError:  # lists, dicts from Parquet
            key = (type(plain).__name__, repr(plain))
        keys.setdefault(key, value)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep first-seen order
    return [(keys[k], counts[k]) for k in ordered]


def _rows(failures: pd.DataFrame) -> list[int]:
    rows = sorted(int(i) + 1 for i in failures["index"].dropna())
    return rows[:ROWS_SHOWN]


def _row_words(rows: list[int]) -> str:
    return ("data row " if len(rows) == 1 else "data rows ") + ", ".join(map(str, rows))


def _examples_text(counted: list[tuple[Any, int]], with_counts: bool) -> str:
    shown = [
        f"{_show(v)} ({c} rows)" if with_counts and c > 1 else _show(v)
        for v, c in counted[:EXAMPLES]
    ]
    more = f" and {len(counted) - EXAMPLES} more" if len(counted) > EXAMPLES else ""
    return ", ".join(shown) + more


def _column_violation(
    column: str, info: _CheckInfo, failures: pd.DataFrame, total: int
) -> Violation:
    broken = failures[failures["index"].isna()]
    if len(broken):  # the check itself raised (pandera reports the exception as the case)
        reason = str(broken["failure_case"].iloc[0])
        return Violation(
            column=column,
            check=info.check,
            message=(
                f"expectation on column {column!r} failed ({info.label}): "
                f"the values could not be checked: {reason}"
            ),
        )
    counted = _counted(failures)
    return Violation(
        column=column,
        check=info.check,
        message=(
            f"expectation on column {column!r} failed ({info.label}) in {len(failures)} of "
            f"{total} rows, {info.failing}: {_examples_text(counted, True)}"
        ),
        failing_rows=len(failures),
        examples=[v for v, _ in counted[:EXAMPLES]],
        rows=_rows(failures),
    )


def _nulls_violation(column: str, failures: pd.DataFrame, total: int) -> Violation:
    rows = _rows(failures)
    more = ", ..." if len(failures) > len(rows) else ""
    return Violation(
        column=column,
        check="nullable",
        message=(
            f"expectation on column {column!r} failed (nullable: false) in {len(failures)} of "
            f"{total} rows, missing at {_row_words(rows)}{more}"
        ),
        failing_rows=len(failures),
        rows=rows,
    )


def _unique_violation(column: str, failures: pd.DataFrame, total: int) -> Violation:
    counted = _counted(failures)
    return Violation(
        column=column,
        check="unique",
        message=(
            f"expectation on column {column!r} failed (unique: true) in {len(failures)} of "
            f"{total} rows, repeated values: {_examples_text(counted, True)}"
        ),
        failing_rows=len(failures),
        examples=[v for v, _ in counted[:EXAMPLES]],
        rows=_rows(failures),
    )


def check_expectations(df: pd.DataFrame, expectations: Sequence[Expectation]) -> list[Violation]:
    """Every violation of `expectations` in `df`, in the spec's order of the columns; [] if met.

    Rows are numbered by position (data rows counted from 1), whatever the frame's index.
    """
    if not expectations:
        return []
    schema, infos = _schema_and_infos(expectations)
    data = df.reset_index(drop=True).set_axis([str(c) for c in df.columns], axis=1)
    try:
        schema.validate(data, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as error:
        cases = error.failure_cases
    else:
        return []

    available = [str(c) for c in data.columns]
    total = len(data)
    found: list[Violation] = []
    for column in infos:
        mine = cases[cases["column"] == column]
        if column not in data.columns:
            found.append(_missing_column(column, available))
            continue
        if mine.empty:
            continue
        nulls = mine[mine["check"] == "not_nullable"]
        if len(nulls):
            found.append(_nulls_violation(column, nulls, total))
        for number, info in enumerate(infos[column]):
            failures = mine[mine["check_number"] == number]
            failures = failures[failures["check"] != "not_nullable"]
            if len(failures):
                found.append(_column_violation(column, info, failures, total))
        repeats = mine[mine["check"] == "field_uniqueness"]
        if len(repeats):
            found.append(_unique_violation(column, repeats, total))
    return found


__all__ = ["Violation", "check_expectations", "expectation_schema"]
