"""Results of the ingest and validate steps (their result.json), as later steps read them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import Strict

ColumnType = Literal["numeric", "categorical", "datetime", "text", "boolean", "id"]
PiiKind = Literal["email", "phone", "card", "ssn", "name", "text"]  # text: PII inside free text


class IngestResult(Strict):
    """What ingest read: written as the `dataset` artifact (Parquet, datetimes parsed)."""

    uri: str
    rows: int = Field(ge=1)
    columns: list[str]
    types: dict[str, ColumnType] = Field(
        description="Inferred type per column; 'id' columns are never used as features."
    )
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the rows.")


class ClassCount(Strict):
    value: bool | int | float | str
    count: int = Field(ge=0)


class ValidateResult(Strict):
    """What validate kept: the `clean` artifact's shape, types and the PII handling applied."""

    rows: int = Field(ge=1)
    dropped_rows: int = Field(ge=0, description="Rows dropped because the target was missing.")
    types: dict[str, ColumnType] = Field(
        description="Type per column of the clean data, after PII masking (masked -> categorical)."
    )
    pii: dict[str, PiiKind] = Field(default_factory=dict)
    pii_action: Literal["mask", "drop", "none", "unscanned"] = Field(
        default="none",
        description="What the served pipeline does with the PII found; `unscanned` when "
        "spec.pii.scan is false (nothing was looked for: the policy keeps it from production).",
    )
    dropped_columns: dict[str, str] = Field(
        default_factory=dict, description="Column -> why it was dropped (empty, constant, pii)."
    )
    warnings: list[str] = Field(default_factory=list)
    target_classes: list[ClassCount] | None = Field(
        default=None, description="Classification: every class with its row count, sorted."
    )
    positive_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Binary classification: share of the positive (greater) class.",
    )
    positive_class: bool | int | float | str | None = None
