"""validate: check the ingested data against the spec, handle PII, write `clean` and `report`.

Fatal problems are collected first and reported together (like a spec validation), so a user
fixes everything in one round; the report is written even then, for inspection. Violations of
spec.expectations are such problems, checked on the data as ingested (before rows without a
target are dropped and before PII is masked or dropped); the report lists them under
`expectations`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aiml024.api import ExperimentSpec
from aiml024.api.data_steps import ClassCount, ValidateResult
from aiml024.api.step_params import ValidateParams

from ..data import ColumnType, infer_types, missing_column_hint, write_parquet
from ..pii import detect_pii, mask_frame
from . import StepError, parse_params

DATASET = "dataset"
CLEAN_FILE = "clean"
REPORT_FILE = "report"

MIN_ROWS = 50  # fewer rows than this cannot be split into folds and a holdout meaningfully
HIGH_CARDINALITY = 200  # categorical columns with more distinct values get a warning
RARE_CLASS_SHARE = 0.05  # minority classes below this share get an imbalance warning
CLASSIFICATION_TASKS = ("classification", "text-classification", "image-classification")
NUMERIC_TARGET_TASKS = ("regression", "forecasting")


@dataclass
class Validation:
    """The outcome of validate_frame: fatal problems, or the clean frame and its result."""

    clean: pd.DataFrame
    report: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    result: ValidateResult | None = None


def missing_column_message(field_name: str, column: str, available: list[str]) -> str:
    """'target 'churn' is not a column of the dataset; did you mean ...? columns: ...'."""
    hint = missing_column_hint(column, available)
    return f"{field_name} {column!r} is not a column of the dataset{hint}"


def expectation_violations(df: pd.DataFrame, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """spec.expectations checked on `df`, the data as ingested: each violation as its report
    entry (`message` is what the user reads). Before the target's empty rows are dropped and
    before PII masking or dropping, so an expectation speaks of the values the user supplied."""
    if not spec.expectations:
        return []
    from ..expectations import check_expectations  # imports pandera: only when asked

    return [v.wire() for v in check_expectations(df, spec.expectations)]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, for JSON and pydantic."""
    return value.item() if hasattr(value, "item") else value


def _sorted_counts(target: pd.Series) -> list[tuple[Any, int]]:
    counts = [(_plain(v), int(c)) for v, c in target.value_counts().items()]
    try:
        return sorted(counts)
    except TypeError:  # mixed value types: order by their text
        return sorted(counts, key=lambda vc: str(vc[0]))


def _check_classification(
    target: pd.Series, spec: ExperimentSpec, problems: list[str], warnings: list[str]
) -> tuple[list[ClassCount], float | None, Any]:
    name = spec.target
    counts = _sorted_counts(target)
    classes = [ClassCount(value=v, count=c) for v, c in counts]
    if len(counts) == 1:
        problems.append(
            f"target {name!r} has one class ({counts[0][0]}): a classifier needs at least two"
        )
        return classes, None, None
    if not counts:
        return classes, None, None
    need = 2 * spec.split.folds
    small = [(v, c) for v, c in counts if c < need]
    if small:
        listed = ", ".join(f"{v!r} has {c}" for v, c in small[:10])
        hint = ""
        if pd.api.types.is_float_dtype(target.dtype) and len(counts) > 20:
            hint = "; the target looks continuous: did you mean task: regression?"
        problems.append(
            f"target {name!r}: every class needs at least {need} rows for "
            f"{spec.split.folds} folds (2 x split.folds), but class {listed}"
            + (f" and {len(small) - 10} more classes are as small" if len(small) > 10 else "")
            + hint
        )
    total = sum(c for _, c in counts)
    rare = [v for v, c in counts if c / total < RARE_CLASS_SHARE]
    if rare and not small:
        warnings.append(
            f"target {name!r} is imbalanced: class {', '.join(map(repr, rare))} is under "
            f"{RARE_CLASS_SHARE:.0%} of the rows"
        )
    if len(counts) == 2:
        positive, positives = counts[1]  # the greater value: 1, True, "yes"
        return classes, positives / total, positive
    return classes, None, None


def _check_numeric_target(
    df: pd.DataFrame, name: str, problems: list[str], warnings: list[str]
) -> pd.DataFrame:
    target = df[name]
    if pd.api.types.is_numeric_dtype(target.dtype):
        numeric = target.astype("float64") if pd.api.types.is_bool_dtype(target) else target
    else:
        numeric = pd.to_numeric(target, errors="coerce")
        bad = target[numeric.isna()]
        if len(bad):
            examples = ", ".join(repr(v) for v in bad.astype(str).unique()[:3])
            problems.append(
                f"target {name!r} is not numeric (values such as {examples} in {len(bad)} rows): "
                "regression needs a number in every row"
            )
            return df
        warnings.append(f"target {name!r} holds numbers stored as text; converted to numbers")
    if numeric.nunique() <= 2:
        warnings.append(
            f"target {name!r} has only {numeric.nunique()} distinct values: "
            "did you mean task: classification?"
        )
    return df.assign(**{name: numeric})


def _integral_target(target: pd.Series) -> pd.Series:
    """0.0/1.0 labels (a CSV column with gaps reads as float) back to integers."""
    if pd.api.types.is_float_dtype(target.dtype) and (target % 1 == 0).all():
        return target.astype("int64")
    return target


def _column_report(
    before: pd.DataFrame, types: dict[str, ColumnType], pii: dict[str, str], dropped: dict[str, str]
) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    rows = max(len(before), 1)
    for name in before.columns:
        entry: dict[str, Any] = {
            "type": types.get(name),
            "missingShare": round(float(before[name].isna().sum()) / rows, 6),
            "cardinality": int(before[name].nunique()),
        }
        if name in pii:
            entry["pii"] = pii[name]
        if name in dropped:
            entry["dropped"] = dropped[name]
        report[name] = entry
    return report


def validate_frame(df: pd.DataFrame, spec: ExperimentSpec) -> Validation:
    """Check and clean one dataset for the spec; pure (no files)."""
    problems: list[str] = []
    warnings: list[str] = []
    columns = [str(c) for c in df.columns]
    target = spec.target

    violations = expectation_violations(df, spec)
    problems.extend(v["message"] for v in violations)

    for field_name, column in (
        ("target", target),
        ("idColumn", spec.id_column),
        ("timeColumn", spec.time_column),
    ):
        if column is not None and column not in df.columns:
            problems.append(missing_column_message(field_name, column, columns))
    for column in spec.features.text_columns:
        if column not in df.columns:
            problems.append(missing_column_message("features.textColumns", column, columns))
    for column in spec.features.drop_columns:
        if column not in df.columns:
            warnings.append(f"features.dropColumns names {column!r}, which is not in the data")

    rows_in = len(df)
    if target in df.columns:
        missing = df[target].isna()
        if missing.any():
            warnings.append(
                f"dropped {int(missing.sum())} of {rows_in} rows whose target {target!r} is "
                f"missing ({missing.mean():.1%})"
            )
            df = df.loc[~missing]
        df = df.reset_index(drop=True)
    dropped_rows = rows_in - len(df)
    if len(df) < MIN_ROWS:
        with_target = " with a target" if dropped_rows else ""
        problems.append(
            f"the dataset has {len(df)} rows{with_target}; training needs at least {MIN_ROWS}"
        )

    classes: list[ClassCount] | None = None
    positive_rate: float | None = None
    positive_class: Any = None
    if target in df.columns and len(df):
        if spec.task in CLASSIFICATION_TASKS:
            df = df.assign(**{target: _integral_target(df[target])})
            classes, positive_rate, positive_class = _check_classification(
                df[target], spec, problems, warnings
            )
        elif spec.task in NUMERIC_TARGET_TASKS:
            df = _check_numeric_target(df, target, problems, warnings)

    # Never mask the target or the key that joins predictions back to rows.
    keep = tuple(c for c in (target, spec.id_column, spec.time_column) if c)
    pii = detect_pii(df, exclude=keep) if spec.pii.scan else {}
    pii_action = spec.pii.action if spec.pii.scan else "unscanned"
    if pii and pii_action == "fail":
        found = ", ".join(f"{c} ({k})" for c, k in pii.items())
        problems.append(
            f"PII found in columns {found} and pii.action is fail: remove them from the data, "
            "or set pii.action to mask or drop"
        )
    if spec.pii.scan and spec.id_column and spec.id_column in df.columns:
        id_kind = detect_pii(df[[spec.id_column]]).get(spec.id_column)
        if id_kind:
            warnings.append(
                f"idColumn {spec.id_column!r} holds {id_kind} values (PII): it is kept to join "
                "predictions and never used as a feature; prefer a surrogate key"
            )
    masked = mask_frame(df, pii, "mask") if pii and pii_action == "mask" else df

    dropped: dict[str, str] = {}
    if pii_action == "drop":
        dropped.update({c: f"pii ({k})" for c, k in pii.items()})
    for name in masked.columns:
        if name in keep or name in dropped:
            continue
        values = masked[name]
        if values.isna().all():
            dropped[name] = "empty"
            warnings.append(f"column {name!r} has no values; dropped")
        elif values.nunique(dropna=False) == 1:
            dropped[name] = "constant"
            warnings.append(f"column {name!r} holds one value ({values.iloc[0]!r}); dropped")

    types = infer_types(masked, spec)
    types.update({c: "categorical" for c in pii if c in masked.columns})
    for name, kind in types.items():
        if name in dropped or name == spec.id_column:
            continue
        distinct = int(masked[name].nunique())
        if kind == "id" and name != spec.id_column:
            warnings.append(
                f"column {name!r} looks like an identifier ({distinct} distinct values in "
                f"{len(masked)} rows); it is not used as a feature"
            )
        elif kind == "categorical" and distinct > HIGH_CARDINALITY and name != target:
            warnings.append(f"column {name!r} is categorical with {distinct} distinct values")
    if spec.time_column in types and types[spec.time_column] not in ("datetime", "numeric"):
        problems.append(
            f"timeColumn {spec.time_column!r} holds neither dates nor numbers "
            f"(inferred {types[spec.time_column]})"
        )
    if spec.id_column in masked.columns and not masked[spec.id_column].is_unique:
        duplicates = int(masked[spec.id_column].duplicated().sum())
        warnings.append(f"idColumn {spec.id_column!r} has {duplicates} duplicate values")

    clean = masked.drop(columns=[c for c in dropped if c in masked.columns])
    report = {
        "rows": len(clean),
        "droppedRows": dropped_rows,
        "columns": _column_report(masked, types, dict(pii), dropped),
        "targetClasses": [c.wire() for c in classes] if classes is not None else None,
        "piiAction": pii_action,
        "expectations": {
            "checked": len(spec.expectations),
            "violations": violations,
        },
        "problems": problems,
        "warnings": warnings,
    }
    if problems:
        return Validation(clean=clean, report=report, problems=problems)
    result = ValidateResult(
        rows=len(clean),
        dropped_rows=dropped_rows,
        types={c: types[c] for c in clean.columns},
        pii=pii,
        pii_action=pii_action,
        dropped_columns=dropped,
        warnings=warnings,
        target_classes=classes,
        positive_rate=positive_rate,
        positive_class=positive_class,
    )
    return Validation(clean=clean, report=report, result=result)


def dataset_path(inputs: Path) -> Path:
    """The ingest artifact: inputs/dataset as a file, or a directory holding dataset.parquet."""
    artifact = inputs / DATASET
    if artifact.is_file():
        return artifact
    if artifact.is_dir():
        inner = artifact / "dataset.parquet"
        return inner if inner.is_file() else artifact
    if (inputs / "dataset.parquet").is_file():
        return inputs / "dataset.parquet"
    raise StepError(f"validate needs the ingest artifact at {artifact}, which is missing")


def run(params: Mapping[str, Any] | ValidateParams, inputs: Path, outputs: Path) -> dict[str, Any]:
    spec = parse_params(ValidateParams, params).spec
    path = dataset_path(inputs)
    try:
        df = pd.read_parquet(path)
    except Exception as error:  # not Parquet, truncated, empty directory
        raise StepError(f"cannot read the dataset artifact {path}: {error}") from None

    outcome = validate_frame(df, spec)
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / REPORT_FILE).write_text(json.dumps(outcome.report, indent=2, default=str) + "\n")
    if outcome.result is None:
        raise StepError("; ".join(outcome.problems))
    write_parquet(outcome.clean, outputs / CLEAN_FILE)
    return outcome.result.wire()
