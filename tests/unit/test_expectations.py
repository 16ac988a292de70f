"""Data expectations: the pandera schema of spec.expectations and the violations a user reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from aiml024.api.experiment import Expectation
from aiml024.runtime.expectations import check_expectations, expectation_schema


def expect(**fields) -> Expectation:
    return Expectation.model_validate(fields)


def messages(df: pd.DataFrame, *expectations: Expectation) -> list[str]:
    return [v.message for v in check_expectations(df, list(expectations))]


@pytest.fixture
def data() -> pd.DataFrame:
    """Ten rows as ingest writes them: typed columns, dates parsed."""
    return pd.DataFrame(
        {
            "age": [34, 51, 29, 42, 38, 61, 27, 45, 33, 58],
            "plan": ["basic", "plus", "pro", "basic", "plus", "pro", "basic", "plus", "pro", "pro"],
            "customer": [f"c{i}" for i in range(10)],
            "senior": [False, True, False, False, False, True, False, False, False, True],
            "signup": pd.to_datetime(["2024-01-0" + str(i) for i in range(1, 10)] + ["2024-02-01"]),
            "score": [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 1.0],
        }
    )


def test_no_expectations_means_no_violations(data):
    assert check_expectations(data, []) == []


def test_every_kind_met_by_clean_data(data):
    met = [
        expect(column="age", dtype="numeric", min=18, max=99, nullable=False),
        expect(column="plan", dtype="string", allowedValues=["basic", "plus", "pro"]),
        expect(column="customer", dtype="string", unique=True, nullable=False),
        expect(column="senior", dtype="boolean"),
        expect(column="signup", dtype="datetime"),
        expect(column="score", min=0, max=1),
    ]
    assert check_expectations(data, met) == []


def test_the_schema_is_pandera_and_names_the_columns(data):
    schema = expectation_schema([expect(column="age", min=0), expect(column="plan", unique=True)])
    assert isinstance(schema, pa.DataFrameSchema)
    assert list(schema.columns) == ["age", "plan"]
    assert schema.columns["plan"].unique and not schema.columns["age"].unique
    # It validates on its own too (the step uses check_expectations for the wording).
    with pytest.raises(pa.errors.SchemaErrors):
        schema.validate(data.assign(age=-1), lazy=True)


class TestDtype:
    def test_numeric_names_the_values_that_are_not_numbers(self, data):
        df = data.astype({"age": object})
        df.loc[[2, 5], "age"] = ["n/a", "unknown"]
        (violation,) = check_expectations(df, [expect(column="age", dtype="numeric")])
        assert violation.message == (
            "expectation on column 'age' failed (dtype: numeric) in 2 of 10 rows, "
            "values that are not numbers: 'n/a', 'unknown'"
        )
        assert violation.column == "age" and violation.check == "dtype"
        assert violation.rows == [3, 6]  # data rows, counted from 1

    def test_numeric_accepts_numbers_stored_as_text(self, data):
        df = data.assign(age=data["age"].astype(str))
        assert messages(df, expect(column="age", dtype="numeric")) == []

    def test_booleans_are_not_numbers(self, data):
        assert messages(data, expect(column="senior", dtype="numeric")) == [
            "expectation on column 'senior' failed (dtype: numeric) in 10 of 10 rows, values "
            "that are not numbers: False (7 rows), True (3 rows)"
        ]

    def test_string(self, data):
        assert messages(data, expect(column="age", dtype="string")) == [
            "expectation on column 'age' failed (dtype: string) in 10 of 10 rows, values that "
            "are not text: 34, 51, 29, 42, 38 and 5 more"
        ]
        assert messages(data, expect(column="plan", dtype="string")) == []

    def test_boolean(self, data):
        df = data.astype({"senior": object})
        df.loc[0, "senior"] = "yes"
        assert messages(df, expect(column="senior", dtype="boolean")) == [
            "expectation on column 'senior' failed (dtype: boolean) in 1 of 10 rows, values "
            "that are not true/false values: 'yes'"
        ]

    def test_datetime_names_the_text_that_is_not_a_date(self, data):
        df = data.assign(signup=data["signup"].dt.strftime("%Y-%m-%d").astype(object))
        assert messages(df, expect(column="signup", dtype="datetime")) == []  # dates as text
        df.loc[4, "signup"] = "last tuesday"
        assert messages(df, expect(column="signup", dtype="datetime")) == [
            "expectation on column 'signup' failed (dtype: datetime) in 1 of 10 rows, values "
            "that are not dates: 'last tuesday'"
        ]
        assert messages(data, expect(column="age", dtype="datetime"))  # numbers are not dates

    def test_missing_values_are_left_to_nullable(self, data):
        df = data.astype({"age": "float64"})
        df.loc[3, "age"] = np.nan
        assert messages(df, expect(column="age", dtype="numeric")) == []


class TestRange:
    def test_min(self, data):
        df = data.assign(age=[34, -1, 29, 42, -7, 61, 27, 45, 33, 58])
        (violation,) = check_expectations(df, [expect(column="age", min=0)])
        assert violation.message == (
            "expectation on column 'age' failed (min: 0) in 2 of 10 rows, "
            "values that are not numbers >= 0: -1, -7"
        )
        assert violation.check == "min" and violation.examples == [-1, -7]
        assert messages(data, expect(column="age", min=18)) == []

    def test_max(self, data):
        assert messages(data, expect(column="score", max=0.85)) == [
            "expectation on column 'score' failed (max: 0.85) in 2 of 10 rows, "
            "values that are not numbers <= 0.85: 0.9, 1"
        ]

    def test_min_and_max_together(self, data):
        (violation,) = check_expectations(data, [expect(column="age", min=30, max=59)])
        assert violation.check == "min/max"
        assert violation.message == (
            "expectation on column 'age' failed (min: 30, max: 59) in 3 of 10 rows, "
            "values that are not numbers between 30 and 59: 29, 61, 27"
        )

    def test_bounds_are_inclusive(self, data):
        assert messages(data, expect(column="age", min=27, max=61)) == []

    def test_text_fails_a_range_unless_dtype_reports_it(self, data):
        df = data.astype({"age": object})
        df.loc[0, "age"] = "old"
        assert messages(df, expect(column="age", min=0)) == [
            "expectation on column 'age' failed (min: 0) in 1 of 10 rows, "
            "values that are not numbers >= 0: 'old'"
        ]
        # With dtype numeric the value is reported once, as not a number.
        assert messages(df, expect(column="age", dtype="numeric", min=0)) == [
            "expectation on column 'age' failed (dtype: numeric) in 1 of 10 rows, "
            "values that are not numbers: 'old'"
        ]


class TestNullsAndUniqueness:
    def test_nullable_false_names_the_rows(self, data):
        df = data.astype({"plan": object})
        df.loc[[1, 8], "plan"] = None
        (violation,) = check_expectations(df, [expect(column="plan", nullable=False)])
        assert violation.message == (
            "expectation on column 'plan' failed (nullable: false) in 2 of 10 rows, "
            "missing at data rows 2, 9"
        )
        assert violation.check == "nullable" and violation.failing_rows == 2
        # Missing values are allowed by default.
        assert messages(df, expect(column="plan")) == []

    def test_unique_names_the_repeated_values(self, data):
        df = data.assign(customer=["c0", "c1", "c0", "c3", "c1", "c0", "c6", "c7", "c8", "c9"])
        (violation,) = check_expectations(df, [expect(column="customer", unique=True)])
        assert violation.message == (
            "expectation on column 'customer' failed (unique: true) in 5 of 10 rows, "
            "repeated values: 'c0' (3 rows), 'c1' (2 rows)"
        )
        assert violation.check == "unique"
        assert messages(data, expect(column="customer", unique=True)) == []

    def test_missing_values_do_not_repeat(self, data):
        df = data.astype({"age": "float64"})
        df.loc[[0, 1], "age"] = np.nan
        assert messages(df, expect(column="age", unique=True)) == []


class TestAllowedValues:
    def test_names_the_other_values_with_counts(self, data):
        df = data.assign(plan=data["plan"].replace({"pro": "gold"}))
        (violation,) = check_expectations(
            df, [expect(column="plan", allowedValues=["basic", "plus", "pro"])]
        )
        assert violation.message == (
            "expectation on column 'plan' failed (allowedValues: basic, plus, pro) in 4 of 10 "
            "rows, values not in the list: 'gold' (4 rows)"
        )
        assert violation.check == "allowedValues"

    def test_numbers_read_from_csv_match_their_text(self, data):
        df = data.assign(tier=[1, 2, 3, 1, 2, 3, 1, 2, 3, 4])
        assert messages(df, expect(column="tier", allowedValues=["1", "2", "3"])) == [
            "expectation on column 'tier' failed (allowedValues: 1, 2, 3) in 1 of 10 rows, "
            "values not in the list: 4"
        ]
        assert messages(df, expect(column="tier", allowedValues=[1, 2, 3, 4])) == []
        with_gaps = df.astype({"tier": "float64"})  # 1.0, 2.0, ... as CSV reads it with a gap
        with_gaps.loc[9, "tier"] = np.nan
        assert messages(with_gaps, expect(column="tier", allowedValues=["1", "2", "3"])) == []


def test_a_column_not_in_the_data_is_a_violation(data):
    (violation,) = check_expectations(data, [expect(column="agee", min=0)])
    assert violation.check == "column"
    assert violation.message == (
        "expectation on column 'agee' failed: the data has no such column; did you mean "
        "'age'? (available columns: age, plan, customer, senior, signup, score)"
    )


def test_several_violations_are_reported_together_in_spec_order(data):
    df = data.assign(age=[34, -1, 29, 42, 38, 61, 27, 45, 33, 58], plan="gold")
    df.loc[0, "customer"] = "c1"
    violations = check_expectations(
        df,
        [
            expect(column="plan", allowedValues=["basic", "plus", "pro"]),
            expect(column="tenure", nullable=False),
            expect(column="age", min=0, unique=True),
            expect(column="customer", unique=True),
            expect(column="score", max=1),  # met
        ],
    )
    assert [(v.column, v.check) for v in violations] == [
        ("plan", "allowedValues"),
        ("tenure", "column"),
        ("age", "min"),
        ("customer", "unique"),
    ]


def test_two_expectations_on_one_column_both_count(data):
    violations = check_expectations(
        data.assign(age=[17] + [30] * 9),
        [expect(column="age", min=18), expect(column="age", unique=True)],
    )
    assert [v.check for v in violations] == ["min", "unique"]


def test_rows_are_counted_by_position_whatever_the_index(data):
    df = data.set_axis(range(100, 110)).assign(age=[34, 51, 29, -4, 38, 61, 27, 45, 33, 58])
    (violation,) = check_expectations(df, [expect(column="age", min=0)])
    assert violation.rows == [4]


def test_the_report_entry_is_plain_json(data):
    df = data.assign(signup=pd.NaT)
    (violation,) = check_expectations(df, [expect(column="signup", nullable=False)])
    entry = violation.wire()
    assert entry["column"] == "signup" and entry["check"] == "nullable"
    assert entry["failingRows"] == 10 and entry["rows"] == [1, 2, 3, 4, 5]
    assert entry["message"].endswith("missing at data rows 1, 2, 3, 4, 5, ...")


def test_allowed_values_written_as_yaml_numbers_and_booleans_are_kept_as_text() -> None:
    """The CRD types allowedValues as strings; YAML's `[1, true]` still means what it says."""
    expectation = Expectation.model_validate({"column": "flag", "allowedValues": [1, True, "x"]})
    assert expectation.allowed_values == ["1", "true", "x"]
    frame = pd.DataFrame({"flag": [1, 1.0, True, "x"]})
    assert check_expectations(frame, [expectation]) == []
    assert check_expectations(pd.DataFrame({"flag": [2]}), [expectation]) != []
