"""Bad input through the real CLI: one clear error, a non-zero exit, nothing stored corrupted."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from tests.e2e.conftest import Cli, small_table, write_experiment


def state_files(home: Path) -> dict[str, str]:
    """Every stored object, to compare before and after a failed command."""
    root = home / "objects"
    return (
        {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}
        if root.exists()
        else {}
    )


def assert_state_parses(home: Path) -> None:
    for path in (home / "objects").rglob("*.json"):
        json.loads(path.read_text())
    assert not list(home.rglob("*.tmp")), "a half-written file was left behind"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    small_table().to_csv(directory / "small.csv", index=False)
    return directory


def test_unknown_field_and_wrong_type_are_named(cli: Cli, tmp_path: Path, data_dir: Path) -> None:
    spec = write_experiment(
        tmp_path / "specs", str(data_dir / "small.csv"), search={"trials": "lots", "colour": 1}
    )
    result = cli("apply", "-f", str(spec))
    assert result.code == 1
    assert "spec.search.trials: Input should be a valid integer" in result.err
    assert "spec.search.colour: unknown field" in result.err
    assert str(spec) in result.err


def test_zero_budget_is_refused_before_anything_runs(
    cli: Cli, home: Path, tmp_path: Path, data_dir: Path
) -> None:
    spec = write_experiment(
        tmp_path / "specs", str(data_dir / "small.csv"), search={"timeBudgetSeconds": 0}
    )
    result = cli("apply", "-f", str(spec))
    assert result.code == 1
    assert "spec.search.timeBudgetSeconds: Input should be greater than or equal to 1" in result.err
    assert state_files(home) == {}


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        (lambda d: small_table().drop(columns=["left"]).to_csv(d / "bad.csv", index=False),
         "target 'left' is not a column of the dataset (available columns: account, usage, plan, signup)"),
        (lambda d: (d / "bad.csv").write_text(""), "empty"),
        (lambda d: small_table().assign(left=1).to_csv(d / "bad.csv", index=False),
         "target 'left' has one class"),
    ],
    ids=["missing-target", "empty-file", "one-class"],
)  # fmt: skip
def test_bad_data_fails_the_step_with_its_reason(
    cli: Cli, home: Path, tmp_path: Path, data_dir: Path, prepare, expected: str
) -> None:
    prepare(data_dir)
    spec = write_experiment(tmp_path / "specs", str(data_dir / "bad.csv"), name="bad")
    result = cli("apply", "-f", str(spec))
    assert result.code == 1, result.out
    assert expected in result.err
    assert result.err.count("error:") == 1
    status = json.loads(cli("get", "experiment", "bad", "-o", "json").out)["status"]
    assert status["phase"] == "Failed"
    assert expected in status["message"]
    assert_state_parses(home)


def test_unreachable_uri_names_the_uri(cli: Cli, tmp_path: Path) -> None:
    spec = write_experiment(tmp_path / "specs", "file:///nonexistent/dir/data.csv", name="lost")
    result = cli("apply", "-f", str(spec))
    assert result.code == 1
    assert "cannot read data.uri file:///nonexistent/dir/data.csv" in result.err


def test_unknown_scheme_says_what_to_install_or_use(cli: Cli, tmp_path: Path) -> None:
    spec = write_experiment(tmp_path / "specs", "nosuch://bucket/data.csv", name="odd")
    result = cli("apply", "-f", str(spec))
    assert result.code == 1
    assert "nosuch://" in result.err


def test_a_failed_apply_leaves_earlier_objects_intact(
    cli: Cli, home: Path, tmp_path: Path, data_dir: Path
) -> None:
    good = write_experiment(tmp_path / "specs", str(data_dir / "small.csv"), name="good")
    assert cli("apply", "-f", str(good)).code == 0
    before = state_files(home)
    pd.DataFrame({"left": []}).to_csv(data_dir / "empty.csv", index=False)
    bad = write_experiment(tmp_path / "other", str(data_dir / "empty.csv"), name="bad")
    assert cli("apply", "-f", str(bad)).code == 1
    after = state_files(home)
    for key, text in before.items():
        if "good" in key:
            assert after[key] == text, f"{key} changed by a failed apply of another object"
    assert_state_parses(home)


def test_a_second_apply_while_one_runs_is_refused(
    cli: Cli, home: Path, tmp_path: Path, data_dir: Path
) -> None:
    slow = write_experiment(tmp_path / "specs", str(data_dir / "small.csv"), name="slow",
                            search={"trials": 1000, "timeBudgetSeconds": 12, "learners": ["lightgbm"]})  # fmt: skip
    results = {}
    first = threading.Thread(
        target=lambda: results.setdefault("first", cli("apply", "-f", str(slow)))
    )
    first.start()
    deadline = time.monotonic() + 60
    while not (home / "apply.owner").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    second = cli("apply", "-f", str(slow))
    first.join()
    assert second.code == 1
    assert "another aiml024 command is running" in second.err
    assert "aiml024 apply, pid" in second.err
    assert results["first"].code == 0, results["first"].err
    assert_state_parses(home)


def test_unreachable_object_store_names_the_uri(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An S3 endpoint on a closed loopback port: unreachable, and no traffic leaves the machine.
    for key, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_MAX_ATTEMPTS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    spec = write_experiment(tmp_path / "specs", "s3://aiml024-data/churn.csv", name="remote")
    result = cli("apply", "-f", str(spec))
    assert result.code == 1
    assert "cannot read data.uri s3://aiml024-data/churn.csv: Could not connect" in result.err
