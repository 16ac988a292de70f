"""Ingest: reading tables from paths and fsspec URIs, clear errors, types and fingerprints."""

from __future__ import annotations

import gzip
import importlib.util
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import EXAMPLES

from aiml024.api import ExperimentSpec
from aiml024.api.data_steps import IngestResult
from aiml024.runtime.data import dataset_fingerprint, infer_types, read_table
from aiml024.runtime.steps import StepError, ingest

CHURN = EXAMPLES / "churn" / "data" / "churn.csv.gz"


def small_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"row-{i}" for i in range(60)],
            "amount": [float(i) * 1.5 for i in range(60)],
            "plan": ["basic", "plus", "pro"] * 20,
            "label": [0, 1] * 30,
        }
    )


def params_for(uri: str, **spec_fields) -> dict:
    spec = {"task": "classification", "data": {"uri": uri}, "target": "label", **spec_fields}
    return {
        "experiment": "t",
        "namespace": "default",
        "experimentUid": "0b6a7c9e-1d2f-4e3a-9b8c-7d6e5f4a3b21",
        "spec": spec,
        "artifactStore": "",
        "studyStorage": "",
        "codeVersion": "0",
        "workflow": "t-g1",
    }


@pytest.fixture
def memory_dir():
    """A unique memory:// folder, removed afterwards (the memory filesystem is global)."""
    root = f"memory://ingest-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


class TestReadTable:
    def test_reads_csv_parquet_and_gzipped_csv_from_paths(self, tmp_path):
        df = small_frame()
        df.to_csv(tmp_path / "a.csv", index=False)
        df.to_parquet(tmp_path / "a.parquet", index=False)
        df.to_csv(tmp_path / "a.csv.gz", index=False)
        for name in ("a.csv", "a.parquet", "a.csv.gz"):
            pd.testing.assert_frame_equal(read_table(str(tmp_path / name)), df)

    def test_reads_file_uris(self, tmp_path):
        small_frame().to_csv(tmp_path / "a.csv", index=False)
        assert len(read_table(f"file://{tmp_path / 'a.csv'}")) == 60

    def test_reads_memory_uris(self, memory_dir):
        df = small_frame()
        with fsspec.open(f"{memory_dir}/a.csv.gz", "wb", compression="gzip") as f:
            f.write(df.to_csv(index=False).encode())
        with fsspec.open(f"{memory_dir}/a.parquet", "wb") as f:
            df.to_parquet(f, index=False)
        pd.testing.assert_frame_equal(read_table(f"{memory_dir}/a.csv.gz"), df)
        pd.testing.assert_frame_equal(read_table(f"{memory_dir}/a.parquet", "parquet"), df)

    def test_detects_parquet_without_a_suffix(self, tmp_path):
        small_frame().to_parquet(tmp_path / "export", index=False)
        assert list(read_table(str(tmp_path / "export")).columns) == [
            "id",
            "amount",
            "plan",
            "label",
        ]

    def test_reads_a_parquet_directory(self, tmp_path):
        (tmp_path / "parts").mkdir()
        df = small_frame()
        df.iloc[:30].to_parquet(tmp_path / "parts" / "part-0.parquet", index=False)
        df.iloc[30:].to_parquet(tmp_path / "parts" / "part-1.parquet", index=False)
        assert len(read_table(str(tmp_path / "parts"))) == 60

    def test_missing_file_names_the_uri(self, tmp_path):
        uri = str(tmp_path / "nope.csv")
        with pytest.raises(StepError, match=r"cannot read data.uri .*nope.csv: no such file"):
            read_table(uri)

    def test_missing_memory_object(self, memory_dir):
        with pytest.raises(StepError, match="cannot read data.uri memory://"):
            read_table(f"{memory_dir}/absent.parquet")

    def test_a_backend_that_is_not_installed_is_named(self):
        # gcsfs is an optional extra that the test environment leaves out on purpose.
        assert importlib.util.find_spec("gcsfs") is None
        with pytest.raises(StepError) as error:
            read_table("gs://bucket/churn.csv")
        assert "cannot read data.uri gs://bucket/churn.csv" in str(error.value)
        assert "gcsfs" in str(error.value)

    def test_unknown_scheme(self):
        with pytest.raises(StepError, match=r"unknown scheme nosuch://"):
            read_table("nosuch://bucket/data.csv")

    def test_empty_file(self, tmp_path):
        (tmp_path / "empty.csv").write_bytes(b"")
        with pytest.raises(StepError, match=r"empty\.csv is an empty file"):
            read_table(str(tmp_path / "empty.csv"))

    def test_gzip_of_nothing_is_empty(self, tmp_path):
        (tmp_path / "empty.csv.gz").write_bytes(gzip.compress(b""))
        with pytest.raises(StepError, match="is empty"):
            read_table(str(tmp_path / "empty.csv.gz"))

    def test_unparseable_file(self, tmp_path):
        (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
        with pytest.raises(StepError, match=r"cannot parse data.uri .*bad.parquet as parquet"):
            read_table(str(tmp_path / "bad.parquet"))

    def test_corrupt_gzip(self, tmp_path):
        (tmp_path / "bad.csv.gz").write_bytes(b"\x1f\x8b\x08garbage")
        with pytest.raises(StepError, match="cannot parse data.uri .*bad.csv.gz as csv"):
            read_table(str(tmp_path / "bad.csv.gz"))


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return read_table(str(CHURN))


class TestInferTypes:
    def test_churn_columns(self, churn):
        spec = ExperimentSpec.model_validate(
            {"task": "classification", "data": {"uri": "x"}, "target": "churned"}
        )
        types = infer_types(churn, spec)
        assert types["customer_id"] == "id"
        assert types["signup_date"] == "datetime"
        assert types["last_active"] == "datetime"
        assert types["last_message"] == "text"
        assert types["region"] == "categorical"
        assert types["contract"] == "categorical"
        assert types["payment_method"] == "categorical"
        assert types["senior"] == "boolean"
        assert types["monthly_charges"] == "numeric"
        assert types["churned"] == "numeric"
        # Raw emails are unique strings: identifiers until validate masks them to domains.
        assert types["email"] == "id"

    def test_spec_names_id_and_text_columns(self):
        df = pd.DataFrame({"key": ["a", "b", "a"] * 10, "note": ["x", "y", "z"] * 10})
        spec = ExperimentSpec.model_validate(
            {
                "task": "classification",
                "data": {"uri": "x"},
                "target": "y",
                "idColumn": "key",
                "features": {"textColumns": ["note"]},
            }
        )
        assert infer_types(df, spec) == {"key": "id", "note": "text"}

    def test_phone_numbers_and_versions_are_not_dates(self):
        df = pd.DataFrame(
            {"phone": ["415-555-0134", "212-555-0199"] * 20, "version": ["1.2.3", "2.0.1"] * 20}
        )
        assert infer_types(df) == {"phone": "categorical", "version": "categorical"}

    def test_integer_row_ids(self):
        df = pd.DataFrame({"row_id": range(100), "count": range(100)})
        assert infer_types(df) == {"row_id": "id", "count": "numeric"}


class TestFingerprint:
    def test_stable_and_sensitive(self):
        df = small_frame()
        assert dataset_fingerprint(df) == dataset_fingerprint(small_frame())
        assert dataset_fingerprint(df) == dataset_fingerprint(df.set_axis(range(100, 160)))
        changed = df.copy()
        changed.loc[3, "amount"] = -1.0
        assert dataset_fingerprint(changed) != dataset_fingerprint(df)
        assert dataset_fingerprint(df.rename(columns={"plan": "tier"})) != dataset_fingerprint(df)


class TestIngestStep:
    def test_writes_the_dataset_and_describes_it(self, tmp_path):
        out = tmp_path / "out"
        result = ingest.run(params_for(str(CHURN)), tmp_path / "in", out)
        IngestResult.model_validate(result)
        assert result["rows"] == 24_000
        assert result["uri"] == str(CHURN)
        assert result["types"]["signup_date"] == "datetime"
        written = pd.read_parquet(out / "dataset")
        assert pd.api.types.is_datetime64_any_dtype(written["last_active"])
        assert result["fingerprint"] == dataset_fingerprint(written)
        again = ingest.run(params_for(str(CHURN)), tmp_path / "in", tmp_path / "out2")
        assert again["fingerprint"] == result["fingerprint"]

    def test_refuses_a_table_without_rows(self, tmp_path):
        (tmp_path / "header.csv").write_text("a,b,label\n")
        with pytest.raises(StepError, match=r"header.csv has no rows \(columns: a, b, label\)"):
            ingest.run(params_for(str(tmp_path / "header.csv")), tmp_path, tmp_path / "out")

    def test_sql_sources_are_refused_clearly(self, tmp_path):
        params = params_for("x")
        params["spec"]["data"] = {
            "sql": {"urlSecret": {"name": "db", "key": "url"}, "query": "select 1"}
        }
        with pytest.raises(StepError, match="data.sql is not supported by the local runtime"):
            ingest.run(params, tmp_path, tmp_path / "out")

    def test_invalid_spec_is_a_step_error(self, tmp_path):
        with pytest.raises(StepError, match="invalid spec"):
            ingest.run(
                {**params_for("x"), "spec": {"task": "classification"}}, tmp_path, tmp_path / "out"
            )


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_frame().to_csv(Path("data.csv"), index=False)
    assert len(read_table("data.csv")) == 60


class TestDuplicateHeaders:
    """pandas renames a repeated CSV header 'a' to 'a.1' and Arrow refuses it in its own words:
    either way the user learns which header repeats, and where."""

    def test_csv_is_refused_naming_the_headers_and_columns(self, tmp_path):
        (tmp_path / "dup.csv").write_text("a,b,a,label\n1,2,3,0\n4,5,6,1\n")
        with pytest.raises(StepError) as error:
            read_table(str(tmp_path / "dup.csv"))
        assert str(error.value) == (
            f"data.uri {tmp_path / 'dup.csv'} has duplicate column headers: a (columns 1 and 3); "
            "give each column its own name"
        )

    def test_every_repeated_header_is_named(self, memory_dir):
        uri = f"{memory_dir}/dup.tsv.gz"
        with fsspec.open(uri, "wb", compression="gzip") as f:
            f.write(b"x\tamount\tx\tplan\tamount\tamount\n1\t2\t3\tp\t5\t6\n")
        with pytest.raises(
            StepError,
            match=r"duplicate column headers: x \(columns 1 and 3\), "
            r"amount \(columns 2, 5 and 6\);",
        ):
            read_table(uri)

    def test_a_header_that_only_looks_renamed_is_kept(self, tmp_path):
        (tmp_path / "ok.csv").write_text("a,a.1,label\n1,2,0\n")
        assert list(read_table(str(tmp_path / "ok.csv")).columns) == ["a", "a.1", "label"]

    def test_blank_headers_are_not_duplicates(self, tmp_path):
        (tmp_path / "blank.csv").write_text("a,,,label\n1,2,3,0\n")
        assert list(read_table(str(tmp_path / "blank.csv")).columns) == [
            "a",
            "Unnamed: 1",
            "Unnamed: 2",
            "label",
        ]

    def test_parquet_file_and_directory(self, tmp_path):
        columns = [pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])]
        table = pa.table(columns, names=["label", "b", "label"])
        pq.write_table(table, tmp_path / "dup.parquet")
        (tmp_path / "parts").mkdir()
        pq.write_table(table, tmp_path / "parts" / "part-0.parquet")
        for name in ("dup.parquet", "parts"):
            with pytest.raises(StepError) as error:
                read_table(str(tmp_path / name))
            assert str(error.value) == (
                f"data.uri {tmp_path / name} has duplicate column headers: "
                "label (columns 1 and 3); give each column its own name"
            )

    def test_the_ingest_step_refuses_it(self, tmp_path):
        df = small_frame()
        text = df.to_csv(index=False).replace("id,amount,plan,label", "id,plan,plan,label", 1)
        (tmp_path / "dup.csv").write_text(text)
        with pytest.raises(StepError, match=r"duplicate column headers: plan \(columns 2 and 3\)"):
            ingest.run(params_for(str(tmp_path / "dup.csv")), tmp_path, tmp_path / "out")
        assert not (tmp_path / "out" / "dataset").exists()

    def test_a_clean_file_still_passes(self, tmp_path):
        small_frame().to_csv(tmp_path / "clean.csv", index=False)
        result = ingest.run(params_for(str(tmp_path / "clean.csv")), tmp_path, tmp_path / "out")
        assert result["columns"] == ["id", "amount", "plan", "label"] and result["rows"] == 60
