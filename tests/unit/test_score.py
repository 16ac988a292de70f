"""Batch scoring: files in, Parquet out, equal to Bundle.predict; the CLI and the cluster Workflow."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from tests.schema_validation import validate_upstream
from typer.testing import CliRunner

from aiml024.api import Model
from aiml024.cli.main import app
from aiml024.compiler import CompileError, CompileOptions, compile_batch_scoring
from aiml024.local.store import Store
from aiml024.runtime import score as scoring
from aiml024.runtime.bundle import BundleMeta, InputColumn, load_bundle, save_bundle
from aiml024.runtime.score import ScoreError, score_file

runner = CliRunner()
MODEL = "tier-v1"


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"c{i:04d}" for i in range(rows)],
        "usage": rng.normal(size=rows).round(3),
        "plan": rng.choice(["a", "b", "c"], rows),
    })  # fmt: skip


def _pipeline(estimator: Any) -> Pipeline:
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="passthrough"
    )
    return Pipeline([("prep", prep), ("model", estimator)])


COLUMNS = [
    InputColumn(name="usage", dtype="numeric"),
    InputColumn(name="plan", dtype="categorical"),
]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    X = _table(300)[["usage", "plan"]]
    y = np.where(X["usage"] + (X["plan"] == "a") > 0.5, "gold", "iron")
    y[::17] = "lead"  # three classes: the multiclass rule (argmax) and one proba per class
    meta = BundleMeta(task="classification", target="tier", id_column="id", columns=COLUMNS,
                      classes=["gold", "iron", "lead"], ignored_columns=["constant_col"])  # fmt: skip
    directory = tmp_path_factory.mktemp("classifier")
    return directory, save_bundle(directory, _pipeline(LogisticRegression()).fit(X, y), meta)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X = _table(300)[["usage", "plan"]]
    y = (X["usage"] > 0).astype(int)
    meta = BundleMeta(task="classification", target="tier", id_column="id", columns=COLUMNS,
                      classes=[0, 1], threshold=0.4)  # fmt: skip
    directory = tmp_path_factory.mktemp("binary")
    save_bundle(directory, _pipeline(LogisticRegression()).fit(X, y), meta)
    return directory


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X = _table(300)[["usage", "plan"]]
    meta = BundleMeta(task="regression", target="spend", columns=COLUMNS)
    directory = tmp_path_factory.mktemp("regressor")
    save_bundle(directory, _pipeline(LinearRegression()).fit(X, X["usage"] * 3), meta)
    return directory


def _expected(bundle_dir: Path, frame: pd.DataFrame) -> pd.DataFrame:
    bundle = load_bundle(bundle_dir)
    expected = bundle.predict(frame)
    if bundle.meta.task == "classification":
        proba = bundle.predict_proba(frame)
        for cls in bundle.meta.classes:
            expected[f"proba_{cls}"] = proba[cls].to_numpy()
    return expected.reset_index(drop=True)


# --- the library -------------------------------------------------------------------------------


def test_csv_gz_in_parquet_out_equals_bundle_predict_across_chunk_boundaries(
    classifier: tuple[Path, str], tmp_path: Path
) -> None:
    frame = _table(53, seed=1)
    frame["tier"] = "gold"  # the target may come along; it is not read
    frame.to_csv(tmp_path / "in.csv.gz", index=False)
    calls: list[tuple[int, int | None]] = []
    summary = score_file(classifier[0], tmp_path / "in.csv.gz", tmp_path / "out.parquet",
                         chunk_rows=10, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert summary.rows == 53 and summary.rows_per_second > 0
    assert calls == [(0, None), (10, None), (20, None), (30, None), (40, None), (50, None),
                     (53, None)]  # fmt: skip
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["id", "label", "score", "proba_gold", "proba_iron", "proba_lead"]
    assert list(out["id"]) == list(frame["id"])
    pd.testing.assert_frame_equal(out.drop(columns="id"), _expected(classifier[0], frame),
                                  check_dtype=False, check_exact=True)  # fmt: skip
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 6
    assert not list(tmp_path.glob(".*partial*"))


def test_parquet_in_keeps_the_id_type_and_binary_labels(binary: Path, tmp_path: Path) -> None:
    frame = _table(25, seed=2)
    frame["id"] = np.arange(1000, 1025)
    frame.to_parquet(tmp_path / "in.parquet")
    summary = score_file(binary, tmp_path / "in.parquet", tmp_path / "out.pq", chunk_rows=7)
    out = pd.read_parquet(tmp_path / "out.pq")
    assert summary.rows == 25 and summary.columns == ["id", "label", "score", "proba_0", "proba_1"]
    assert out["id"].dtype == np.int64 and list(out["id"]) == list(range(1000, 1025))
    assert out["label"].dtype == np.int64
    pd.testing.assert_frame_equal(out.drop(columns="id"), _expected(binary, frame),
                                  check_exact=True)  # fmt: skip


def test_without_an_id_column_rows_are_numbered_and_regression_has_no_proba(
    regressor: Path, tmp_path: Path
) -> None:
    frame = _table(12, seed=3)[["usage", "plan"]]
    frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(regressor, tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=5)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["row", "label", "score"]
    assert list(out["row"]) == list(range(12))
    pd.testing.assert_frame_equal(out.drop(columns="row"), _expected(regressor, frame),
                                  check_exact=True)  # fmt: skip


def test_an_empty_input_writes_an_empty_file_with_the_columns(binary: Path, tmp_path: Path) -> None:
    _table(0).to_csv(tmp_path / "in.csv", index=False)
    assert score_file(binary, tmp_path / "in.csv", tmp_path / "out.parquet").rows == 0
    assert list(pd.read_parquet(tmp_path / "out.parquet").columns)[:3] == ["id", "label", "score"]


def test_unknown_columns_are_refused_by_name_before_any_output(
    classifier: tuple[Path, str], tmp_path: Path
) -> None:
    frame = _table(5)
    frame["colour"] = "red"
    frame.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(
        ScoreError, match=r"unknown column 'colour' \(the model expects: usage, plan\)"
    ):
        score_file(classifier[0], tmp_path / "in.csv", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_text_in_a_numeric_column_is_refused_with_its_row(
    classifier: tuple[Path, str], tmp_path: Path
) -> None:
    frame = _table(30).astype({"usage": object})
    frame.loc[23, "usage"] = "abc"
    frame.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ScoreError, match="column 'usage' is numeric; row 23 has 'abc'"):
        score_file(classifier[0], tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=10)
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*partial*"))


def test_existing_output_is_refused_unless_overwrite(
    classifier: tuple[Path, str], tmp_path: Path
) -> None:
    _table(5).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "out.parquet").write_bytes(b"keep me")
    with pytest.raises(ScoreError, match="already exists; remove it or pass --overwrite"):
        score_file(classifier[0], tmp_path / "in.csv", tmp_path / "out.parquet")
    assert (tmp_path / "out.parquet").read_bytes() == b"keep me"
    score_file(classifier[0], tmp_path / "in.csv", tmp_path / "out.parquet", overwrite=True)
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 5


@pytest.mark.parametrize(
    ("input_name", "output_name", "message"),
    [
        ("in.json", "out.parquet", "cannot tell the format of input .*in.json"),
        ("in.csv", "out.csv", "the output is Parquet; name it .parquet or .pq"),
        ("missing.csv", "out.parquet", "cannot read input .*missing.csv: no such file"),
        ("bad.parquet", "out.parquet", "cannot read input .*bad.parquet as parquet"),
    ],
)
def test_bad_names_and_unreadable_files_are_refused(
    classifier: tuple[Path, str], tmp_path: Path, input_name: str, output_name: str, message: str
) -> None:
    _table(3).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.json").write_text("{}")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ScoreError, match=message):
        score_file(classifier[0], tmp_path / input_name, tmp_path / output_name)


def test_digest_mismatch_is_refused_naming_both_digests(
    classifier: tuple[Path, str], tmp_path: Path
) -> None:
    _table(3).to_csv(tmp_path / "in.csv", index=False)
    wrong = "0" * 64
    with pytest.raises(ScoreError, match=f"the Model records sha256 {wrong}, the bundle's files "
                                         f"give {classifier[1]}; refusing to score"):  # fmt: skip
        score_file(classifier[0], tmp_path / "in.csv", tmp_path / "out.parquet", sha256=wrong)


def test_the_module_entry_point_verifies_and_scores_uris(
    classifier: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _table(9).to_csv(tmp_path / "in.csv", index=False)
    base = ["--model-uri", classifier[0].as_uri(), "--input", (tmp_path / "in.csv").as_uri(),
            "--output", (tmp_path / "out.parquet").as_uri()]  # fmt: skip
    assert scoring.main([*base, "--sha256", "f" * 64]) == 2
    assert "bundle digest mismatch" in capsys.readouterr().err
    assert scoring.main([*base, "--sha256", classifier[1], "--chunk-rows", "4"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["rows"] for e in events] == [0, 4, 8, 9, 9]
    assert events[-1]["event"] == "done" and events[-1]["rowsPerSecond"] > 0
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 9


# --- the command ---------------------------------------------------------------------------------


def _register(home: Path, bundle: Path, digest: str, decision: str | None = "allow") -> None:
    store = Store(home)
    store.apply({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": MODEL, "namespace": "default"},
        "spec": {"source": {"experiment": "tier"}, "task": "classification"},
    })  # fmt: skip
    status: dict[str, Any] = {"artifactUri": bundle.as_uri(), "sha256": digest, "stage": "staging"}
    if decision:
        status["policy"] = {"decision": decision, "bundleDigest": digest, "stage": "staging",
                            "evaluatedAt": "2025-01-01T00:00:00Z", "sha256": digest}  # fmt: skip
    store.update_status("Model", MODEL, status)
    for name, stage in (("tier", "staging"), ("tier-prod", "production")):
        store.apply({
            "apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": MODEL, "requireStage": stage},
        })  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("AIML024_HOME", str(home))
    return home


def test_cli_scores_a_model_and_a_deployment_honouring_its_require_stage(
    classifier: tuple[Path, str], home: Path, tmp_path: Path
) -> None:
    _register(home, *classifier)
    _table(20).to_parquet(tmp_path / "in.parquet")
    args = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out.parquet")]
    result = runner.invoke(app, ["score", f"model/{MODEL}", *args])
    assert result.exit_code == 0, result.output
    assert f"scored 20 rows with model/{MODEL} (sha256 {classifier[1][:12]}) in " in result.stdout
    assert "rows/s" in result.stdout
    result = runner.invoke(app, ["score", "deployment/tier", *args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert f"with deployment/tier -> model/{MODEL}" in result.stdout
    result = runner.invoke(app, ["score", "deployment/tier-prod", *args, "--overwrite"])
    assert result.exit_code == 1
    assert "the deployment requires an allowed production; not scoring" in result.stderr
    result = runner.invoke(app, ["score", f"model/{MODEL}", *args])
    assert result.exit_code == 1 and "already exists" in result.stderr


def test_cli_refuses_a_changed_bundle_and_an_unregistered_model(
    classifier: tuple[Path, str], home: Path, tmp_path: Path
) -> None:
    _register(home, classifier[0], "e" * 64)
    _table(3).to_csv(tmp_path / "in.csv", index=False)
    args = ["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet")]
    result = runner.invoke(app, ["score", f"model/{MODEL}", *args])
    assert result.exit_code == 1
    assert f"the Model records sha256 {'e' * 64}, the bundle's files give {classifier[1]}" in (
        result.stderr.replace("\n", "")
    )
    result = runner.invoke(app, ["score", "model/nope", *args])
    assert result.exit_code == 1 and 'models "nope" not found' in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_cli_deployment_manifest_needs_a_policy_decision(
    classifier: tuple[Path, str], home: Path, tmp_path: Path, repo: Path
) -> None:
    _register(home, *classifier, decision=None)
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text((repo / "examples/churn/deployment.yaml").read_text()
                        .replace("churn-model-v1", MODEL))  # fmt: skip
    _table(3).to_csv(tmp_path / "in.csv", index=False)
    args = ["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet")]
    result = runner.invoke(app, ["score", "-f", str(manifest), *args])
    assert result.exit_code == 1
    assert f"model {MODEL} has no recorded policy decision; not scoring" in result.stderr
    assert runner.invoke(app, ["score", f"model/{MODEL}", *args]).exit_code == 0


# --- the cluster Workflow --------------------------------------------------------------------------


def _cluster_model(digest: str = "a" * 64) -> Model:
    return Model.model_validate({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": MODEL, "namespace": "team-a"},
        "spec": {"source": {"experiment": "tier"}, "task": "classification"},
        "status": {"artifactUri": "s3://aiml024-artifacts/team-a/tier/u/tier-g1/bundle",
                   "sha256": digest},
    })  # fmt: skip


def test_compiled_workflow_validates_against_the_upstream_argo_schema(schemas_dir: Path) -> None:
    options = CompileOptions(image="registry.example/runtime:1", image_pull_policy="IfNotPresent")
    workflow = compile_batch_scoring(
        _cluster_model(), "s3://data/in.csv.gz", "s3://aiml024-artifacts/team-a/out.parquet",
        options,
    )  # fmt: skip
    assert validate_upstream(workflow, schemas_dir) == []
    assert re.fullmatch(f"{MODEL}-score-[0-9a-f]{{8}}", workflow["metadata"]["name"])
    assert workflow["metadata"]["labels"]["aiml024.io/model"] == MODEL
    assert workflow["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aiml024"
    spec = workflow["spec"]
    # Not the runtime identity: users create these Workflows (manifests/runtime-guard.yaml).
    assert spec["serviceAccountName"] == "aiml024-batch"
    (template,) = spec["templates"]
    container = template["container"]
    assert container["image"] == "registry.example/runtime:1"
    assert container["command"] == ["python", "-m", "aiml024.runtime.score"]
    assert container["args"] == [
        "--model-uri", "s3://aiml024-artifacts/team-a/tier/u/tier-g1/bundle", "--sha256", "a" * 64,
        "--input", "s3://data/in.csv.gz", "--output", "s3://aiml024-artifacts/team-a/out.parquet",
    ]  # fmt: skip
    assert container["resources"]["limits"] == {"memory": "4Gi"}
    assert "{{" not in json.dumps(workflow)
    assert compile_batch_scoring(
        _cluster_model(), "s3://data/in.csv.gz", "s3://aiml024-artifacts/team-a/out.parquet",
        options,
    ) == workflow  # fmt: skip


@pytest.mark.parametrize(
    ("input_uri", "output_uri", "message"),
    [
        ("/etc/passwd.csv", "s3://b/out.parquet", "input: '/etc/passwd.csv' is not object storage"),
        ("s3://b/{{workflow.name}}.csv", "s3://b/o.parquet", "which Argo would substitute"),
        ("s3://b/in.csv", "https://b/o.parquet", "output: 'https://b/o.parquet' is not object"),
        ("s3://b/in.csv", "s3://aiml024-artifacts/other/o.parquet", "another namespace's part"),
        ("s3://b/in.csv", "s3://b/o.csv", "the output is Parquet"),
    ],
)
def test_compile_refuses_what_the_step_may_not_read_or_write(
    input_uri: str, output_uri: str, message: str
) -> None:
    with pytest.raises(CompileError, match=message):
        compile_batch_scoring(_cluster_model(), input_uri, output_uri, CompileOptions())


def test_compile_refuses_a_model_without_a_registered_artifact() -> None:
    model = _cluster_model().model_copy(update={"status": None})
    with pytest.raises(CompileError, match="has no registered artifact and digest yet"):
        compile_batch_scoring(model, "s3://b/in.csv", "s3://b/o.parquet", CompileOptions())


def test_cli_compile_prints_the_workflow_of_a_model_manifest(tmp_path: Path, home: Path) -> None:
    manifest = tmp_path / "model.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model", "metadata": {"name": MODEL},
        "spec": {"task": "classification",
                 "source": {"artifactUri": "s3://models/tier/bundle", "sha256": "b" * 64}},
    }))  # fmt: skip
    result = runner.invoke(app, ["score", "-f", str(manifest), "--input", "s3://d/in.parquet",
                                 "--output", "s3://d/out.parquet", "--compile"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kind: Workflow" in result.stdout and "- s3://models/tier/bundle" in result.stdout
