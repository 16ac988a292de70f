"""Validate: data checks a user would hit, PII handling, and the clean and report artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import EXAMPLES
from tests.unit.test_ingest import params_for

from aiml024.api.data_steps import ValidateResult
from aiml024.runtime.steps import StepError, ingest, validate

CHURN = EXAMPLES / "churn" / "data" / "churn.csv.gz"


# What ingest wrote (validate reads the dataset artifact; the result only has to be whole).
INGESTED = {
    "uri": "unused.csv",
    "rows": 120,
    "columns": ["customer", "amount", "plan", "label"],
    "types": {"customer": "id", "amount": "numeric", "plan": "categorical", "label": "numeric"},
    "fingerprint": "0" * 64,
}


def ingest_params(**spec_fields) -> dict:
    return params_for("unused.csv", **{"split": {"folds": 3}, **spec_fields})


def params(**spec_fields) -> dict:
    return {**ingest_params(**spec_fields), "ingest": INGESTED}


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer": [f"c{i:05d}" for i in range(n)],
            "amount": rng.normal(50, 10, n).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "label": rng.integers(0, 2, n),
        }
    )


def run_on(df: pd.DataFrame, tmp_path: Path, **spec_fields) -> dict:
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    df.to_parquet(inputs / "dataset", index=False)
    return validate.run(params(**spec_fields), inputs, tmp_path / "out")


class TestChurn:
    @pytest.fixture(scope="class")
    @classmethod
    def validated(cls, tmp_path_factory) -> tuple[dict, Path]:
        root = tmp_path_factory.mktemp("churn")
        spec = {
            "data": {"uri": str(CHURN)},
            "target": "churned",
            "idColumn": "customer_id",
            "features": {"textColumns": ["last_message"]},
        }
        ingested = ingest.run(ingest_params(**spec), root / "ingest-in", root / "ingest-out")
        (root / "in").mkdir()
        # The executor copies the artifact file to inputs/<artifact-name>.
        shutil.copy(root / "ingest-out" / "dataset", root / "in" / "dataset")
        result = validate.run({**params(**spec), "ingest": ingested}, root / "in", root / "out")
        return result, root / "out"

    def test_result(self, validated):
        result, _ = validated
        ValidateResult.model_validate(result)
        assert result["rows"] == 24_000 and result["droppedRows"] == 0
        assert result["pii"] == {"email": "email", "phone": "phone"}
        assert result["piiAction"] == "mask"
        assert result["targetClasses"][0]["value"] == 0 and result["targetClasses"][1]["value"] == 1
        assert sum(c["count"] for c in result["targetClasses"]) == 24_000
        assert 0.2 <= result["positiveRate"] <= 0.27 and result["positiveClass"] == 1

    def test_types_after_masking(self, validated):
        types = validated[0]["types"]
        assert types["email"] == "categorical"  # the domain is a feature, the mailbox is gone
        assert types["phone"] == "categorical"
        assert types["last_message"] == "text"
        assert types["signup_date"] == "datetime"
        assert types["region"] == "categorical"
        assert types["customer_id"] == "id"

    def test_clean_is_masked_and_report_is_written(self, validated):
        _, out = validated
        clean = pd.read_parquet(out / "clean")
        assert clean["email"].dropna().str.match(r"^<email>@[a-z.]+$").all()
        assert set(clean["phone"].dropna()) == {"<phone>"}
        assert clean["customer_id"].str.startswith("CUST-").all()
        report = json.loads((out / "report").read_text())
        assert report["columns"]["email"]["pii"] == "email"
        assert report["columns"]["region"]["cardinality"] == 40
        assert report["problems"] == []


class TestTarget:
    def test_missing_target_lists_the_columns(self, tmp_path):
        with pytest.raises(StepError) as error:
            run_on(frame(), tmp_path, target="lable")
        message = str(error.value)
        assert "target 'lable' is not a column of the dataset" in message
        assert "did you mean 'label'?" in message
        assert "available columns: customer, amount, plan, label" in message

    def test_one_class(self, tmp_path):
        df = frame().assign(label=0)
        with pytest.raises(
            StepError,
            match=r"target 'label' has one class \(0\): a classifier "
            r"needs at least two",
        ):
            run_on(df, tmp_path)
        # The report is written anyway, with the problem in it.
        report = json.loads((tmp_path / "out" / "report").read_text())
        assert report["problems"] and "one class" in report["problems"][0]

    def test_each_class_needs_two_rows_per_fold(self, tmp_path):
        df = frame()
        df.loc[:4, "label"] = 2  # five rows; three folds need six
        with pytest.raises(StepError, match=r"at least 6 rows for 3 folds.*class 2 has 5"):
            run_on(df, tmp_path)

    def test_rows_without_a_target_are_dropped_with_a_warning(self, tmp_path):
        df = frame().astype({"label": "float64"})
        df.loc[:9, "label"] = np.nan
        result = run_on(df, tmp_path)
        assert result["rows"] == 110 and result["droppedRows"] == 10
        assert any(
            "dropped 10 of 120 rows whose target 'label' is missing" in w
            for w in result["warnings"]
        )
        assert [c["value"] for c in result["targetClasses"]] == [0, 1]  # 0.0/1.0 back to ints
        assert pd.read_parquet(tmp_path / "out" / "clean")["label"].dtype == np.int64

    def test_too_few_rows(self, tmp_path):
        with pytest.raises(StepError, match="the dataset has 20 rows; training needs at least 50"):
            run_on(frame(20), tmp_path)

    def test_regression_needs_a_numeric_target(self, tmp_path):
        df = frame().assign(price=["cheap", "dear"] * 60)
        with pytest.raises(
            StepError,
            match=r"target 'price' is not numeric \(values such as "
            r"'cheap', 'dear' in 120 rows\)",
        ):
            run_on(df, tmp_path, task="regression", target="price", objective="minimize_rmse")

    def test_regression_accepts_numbers(self, tmp_path):
        result = run_on(frame(), tmp_path, task="regression", target="amount")
        assert "targetClasses" not in result and "positiveRate" not in result

    def test_id_and_time_columns_must_exist(self, tmp_path):
        with pytest.raises(StepError) as error:
            run_on(frame(), tmp_path, idColumn="customer_id", timeColumn="ts")
        assert "idColumn 'customer_id' is not a column" in str(error.value)
        assert "timeColumn 'ts' is not a column" in str(error.value)


class TestColumns:
    def test_empty_and_constant_columns_are_dropped(self, tmp_path):
        df = frame().assign(nothing=np.nan, same="x", sparse=[None] * 119 + ["y"])
        result = run_on(df, tmp_path)
        assert result["droppedColumns"] == {"nothing": "empty", "same": "constant"}
        assert "column 'nothing' has no values; dropped" in result["warnings"]
        assert set(pd.read_parquet(tmp_path / "out" / "clean").columns) == {
            "customer",
            "amount",
            "plan",
            "label",
            "sparse",
        }

    def test_identifier_like_columns_are_flagged(self, tmp_path):
        result = run_on(frame(), tmp_path)
        assert result["types"]["customer"] == "id"
        assert any("'customer' looks like an identifier" in w for w in result["warnings"])


class TestPii:
    @pytest.fixture
    def with_pii(self) -> pd.DataFrame:
        df = frame()
        df["email"] = [f"user{i}@{'gmail.com' if i % 2 else 'corp.io'}" for i in range(len(df))]
        df["name"] = [f"Person {i}" for i in range(len(df))]
        return df

    def test_fail_names_the_columns(self, tmp_path, with_pii):
        with pytest.raises(
            StepError,
            match=r"PII found in columns email \(email\), name \(name\) "
            r"and pii.action is fail",
        ):
            run_on(with_pii, tmp_path, pii={"action": "fail"})

    def test_drop_removes_the_columns(self, tmp_path, with_pii):
        result = run_on(with_pii, tmp_path, pii={"action": "drop"})
        assert result["pii"] == {"email": "email", "name": "name"}
        assert result["droppedColumns"] == {"email": "pii (email)", "name": "pii (name)"}
        assert "email" not in pd.read_parquet(tmp_path / "out" / "clean").columns

    def test_mask_keeps_domains(self, tmp_path, with_pii):
        result = run_on(with_pii, tmp_path)
        clean = pd.read_parquet(tmp_path / "out" / "clean")
        assert set(clean["email"]) == {"<email>@gmail.com", "<email>@corp.io"}
        assert result["types"]["email"] == "categorical"
        # Every name masks to the same token: constant, so it carries nothing and is dropped.
        assert result["droppedColumns"] == {"name": "constant"}

    def test_scan_off_leaves_data_alone_and_says_it_was_not_scanned(self, tmp_path, with_pii):
        """Not "none found": the evidence says nothing was looked for (policy: pii_unscanned)."""
        result = run_on(with_pii, tmp_path, pii={"scan": False, "action": "fail"})
        assert result["pii"] == {} and result["piiAction"] == "unscanned"

    def test_directory_artifact(self, tmp_path, with_pii):
        (tmp_path / "in" / "dataset").mkdir(parents=True)
        with_pii.to_parquet(tmp_path / "in" / "dataset" / "dataset.parquet", index=False)
        assert validate.run(params(), tmp_path / "in", tmp_path / "out")["rows"] == 120

    def test_missing_artifact(self, tmp_path):
        with pytest.raises(StepError, match="validate needs the ingest artifact"):
            validate.run(params(), tmp_path, tmp_path / "out")


class TestExpectations:
    """spec.expectations: a violation fails the run, named in the error and in the report."""

    def test_a_violation_fails_the_run_naming_column_check_and_values(self, tmp_path):
        df = frame()
        df.loc[[3, 7], "amount"] = [-5.0, -12.5]
        with pytest.raises(StepError) as error:
            run_on(df, tmp_path, expectations=[{"column": "amount", "min": 0}])
        assert str(error.value) == (
            "expectation on column 'amount' failed (min: 0) in 2 of 120 rows, "
            "values that are not numbers >= 0: -5, -12.5"
        )
        report = json.loads((tmp_path / "out" / "report").read_text())
        (violation,) = report["expectations"]["violations"]
        assert violation == {
            "column": "amount",
            "check": "min",
            "message": str(error.value),
            "failingRows": 2,
            "examples": [-5.0, -12.5],
            "rows": [4, 8],
        }
        assert report["expectations"]["checked"] == 1
        assert report["problems"] == [str(error.value)]
        assert not (tmp_path / "out" / "clean").exists()

    def test_several_violations_and_other_problems_fail_together(self, tmp_path):
        df = frame().assign(plan=["basic", "gold"] * 60)
        df.loc[0, "customer"] = "c00001"
        with pytest.raises(StepError) as error:
            run_on(
                df,
                tmp_path,
                target="labels",
                expectations=[
                    {"column": "plan", "allowedValues": ["basic", "plus", "pro"]},
                    {"column": "customer", "unique": True, "dtype": "string"},
                    {"column": "tenure", "dtype": "numeric"},
                    {"column": "amount", "dtype": "numeric", "nullable": False},  # met
                ],
            )
        message = str(error.value)
        assert message.split("; ")[:3] == [
            "expectation on column 'plan' failed (allowedValues: basic, plus, pro) in 60 of 120 "
            "rows, values not in the list: 'gold' (60 rows)",
            "expectation on column 'customer' failed (unique: true) in 2 of 120 rows, "
            "repeated values: 'c00001' (2 rows)",
            "expectation on column 'tenure' failed: the data has no such column "
            "(available columns: customer, amount, plan, label)",
        ]
        assert "target 'labels' is not a column of the dataset; did you mean 'label'?" in message
        report = json.loads((tmp_path / "out" / "report").read_text())
        assert [(v["column"], v["check"]) for v in report["expectations"]["violations"]] == [
            ("plan", "allowedValues"),
            ("customer", "unique"),
            ("tenure", "column"),
        ]
        assert len(report["problems"]) == 4

    def test_a_missing_column_is_a_violation(self, tmp_path):
        with pytest.raises(StepError) as error:
            run_on(frame(), tmp_path, expectations=[{"column": "Plan", "nullable": False}])
        assert str(error.value) == (
            "expectation on column 'Plan' failed: the data has no such column; did you mean "
            "'plan'? (available columns: customer, amount, plan, label)"
        )

    def test_met_expectations_pass_and_are_reported(self, tmp_path):
        expectations = [
            {"column": "customer", "dtype": "string", "unique": True, "nullable": False},
            {"column": "amount", "dtype": "numeric", "min": 0, "max": 1000},
            {"column": "plan", "allowedValues": ["basic", "plus", "pro"]},
            {"column": "label", "allowedValues": [0, 1]},
        ]
        result = run_on(frame(), tmp_path, expectations=expectations)
        assert result["rows"] == 120
        report = json.loads((tmp_path / "out" / "report").read_text())
        assert report["expectations"] == {"checked": 4, "violations": []}
        assert (tmp_path / "out" / "clean").is_file()

    def test_no_expectations_checks_nothing(self, tmp_path):
        run_on(frame(), tmp_path)
        report = json.loads((tmp_path / "out" / "report").read_text())
        assert report["expectations"] == {"checked": 0, "violations": []}

    def test_checked_on_the_data_as_ingested_before_pii_masking(self, tmp_path):
        """Masking turns every email into '<email>@domain', which repeats; the raw ones don't."""
        df = frame().assign(email=[f"user{i}@corp.io" for i in range(120)])
        unique_email = [{"column": "email", "unique": True}]
        result = run_on(df, tmp_path, expectations=unique_email)
        assert result["pii"] == {"email": "email"}
        # Dropped as PII, the column is still checked: a violation there still fails.
        df.loc[1, "email"] = "user0@corp.io"
        with pytest.raises(StepError, match=r"column 'email' failed \(unique: true\)"):
            run_on(df, tmp_path, pii={"action": "drop"}, expectations=unique_email)

    def test_checked_before_rows_without_a_target_are_dropped(self, tmp_path):
        df = frame().astype({"label": "float64"})
        df.loc[[0, 5], "label"] = np.nan
        assert run_on(df, tmp_path)["droppedRows"] == 2  # without the expectation: dropped
        with pytest.raises(StepError) as error:
            run_on(df, tmp_path, expectations=[{"column": "label", "nullable": False}])
        assert str(error.value) == (
            "expectation on column 'label' failed (nullable: false) in 2 of 120 rows, "
            "missing at data rows 1, 6"
        )

    def test_the_churn_example_meets_its_expectations(self, tmp_path):
        spec = {
            "data": {"uri": str(CHURN)},
            "target": "churned",
            "idColumn": "customer_id",
            "features": {"textColumns": ["last_message"]},
            "expectations": [
                {"column": "customer_id", "dtype": "string", "unique": True, "nullable": False},
                {"column": "tenure_months", "dtype": "numeric", "min": 0},
                {"column": "signup_date", "dtype": "datetime", "nullable": False},
                {"column": "senior", "dtype": "boolean"},
                {"column": "churned", "allowedValues": [0, 1], "nullable": False},
            ],
        }
        ingested = ingest.run(ingest_params(**spec), tmp_path, tmp_path / "ingest-out")
        (tmp_path / "in").mkdir()
        shutil.copy(tmp_path / "ingest-out" / "dataset", tmp_path / "in" / "dataset")
        result = validate.run(
            {**params(**spec), "ingest": ingested}, tmp_path / "in", tmp_path / "out"
        )
        assert result["rows"] == 24_000
