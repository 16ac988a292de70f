"""Drift: the reference profile, the statistics, one monitor run over logged requests, the
report files and the alert."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aiml024.api.deployment import Monitor
from aiml024.api.monitoring import PREDICTION, DriftReport, FeatureDrift
from aiml024.runtime import drift
from aiml024.runtime.bundle import META_FILE, BundleMeta, InputColumn
from aiml024.runtime.monitor import (
    last_until,
    latest_document,
    main,
    post_alert,
    read_reports,
    run_monitor,
    write_report,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
META = BundleMeta(
    task="classification",
    target="churned",
    columns=[
        InputColumn(name="tenure", dtype="numeric"),
        InputColumn(name="plan", dtype="categorical"),
        InputColumn(name="autopay", dtype="boolean"),
        InputColumn(name="signup", dtype="datetime"),
        InputColumn(name="note", dtype="text"),
    ],
    classes=["no", "yes"],
)


def frame(n: int, seed: int, shift: float = 0.0, plans: tuple[float, ...] = (0.6, 0.3, 0.1),
          missing: float = 0.0) -> pd.DataFrame:  # fmt: skip
    rng = np.random.default_rng(seed)
    tenure = rng.normal(24 + shift, 6, n)
    tenure[rng.random(n) < missing] = np.nan
    return pd.DataFrame(
        {
            "tenure": tenure,
            "plan": rng.choice(["basic", "plus", "pro"], n, p=list(plans)),
            "autopay": rng.random(n) < 0.5,
            "signup": pd.date_range("2025-01-01", periods=n, freq="h").astype(str),
            "note": ["fine"] * n,
        }
    )


def typed(df: pd.DataFrame) -> pd.DataFrame:
    from aiml024.runtime.bundle import Bundle

    return Bundle(None, META).frame(df)


def scores(df: pd.DataFrame) -> np.ndarray:
    return 1 / (1 + np.exp(-(df["tenure"].fillna(24).to_numpy() - 24) / 6))


@pytest.fixture(scope="module")
def profile() -> drift.ReferenceProfile:
    train = frame(3000, 0)
    return drift.build_profile(typed(train), scores(train), seed=7, meta=META)


def scored(profile: drift.ReferenceProfile, df: pd.DataFrame, method: str = "psi",
           threshold: float = 0.2) -> dict[str, FeatureDrift]:  # fmt: skip
    found = drift.compare(profile, typed(df), scores(df), method, threshold)  # type: ignore[arg-type]
    return {f.feature: f for f in found}


# --- the profile ------------------------------------------------------------------------------


def test_profile_bins_levels_and_skips(profile: drift.ReferenceProfile) -> None:
    tenure = profile.feature("tenure")
    assert isinstance(tenure, drift.NumericProfile)
    assert len(tenure.edges) == 9 and len(tenure.proportions) == 11  # 10 bins + missing
    assert all(abs(p - 0.1) < 0.01 for p in tenure.proportions[:10])
    assert tenure.proportions[-1] == 0.0 and len(tenure.sample) == drift.SAMPLE_SIZE
    plan = profile.feature("plan")
    assert isinstance(plan, drift.CategoricalProfile)
    assert plan.levels == ["basic", "plus", "pro"] and len(plan.proportions) == 5
    autopay = profile.feature("autopay")
    assert isinstance(autopay, drift.CategoricalProfile) and autopay.boolean
    assert sorted(autopay.levels) == ["false", "true"]
    assert set(profile.skipped) == {"signup", "note"}
    assert profile.prediction is not None and profile.prediction.name == PREDICTION
    # Deterministic: the same data and seed give the same file.
    again = drift.build_profile(typed(frame(3000, 0)), scores(frame(3000, 0)), seed=7, meta=META)
    assert again == profile


def test_profile_dedups_edges_and_caps_levels() -> None:
    df = pd.DataFrame({"x": [0.0] * 80 + [1.0] * 20, "c": [f"l{i % 70}" for i in range(100)]})
    built = drift.build_profile(df, None, seed=0)
    x = built.feature("x")
    assert isinstance(x, drift.NumericProfile) and x.edges == [0.0, 1.0]
    c = built.feature("c")
    assert isinstance(c, drift.CategoricalProfile) and len(c.levels) == drift.TOP_LEVELS
    assert c.proportions[-2] > 0  # the other 20 levels


def test_profile_round_trips_through_the_bundle(
    tmp_path: Path, profile: drift.ReferenceProfile
) -> None:
    drift.write_profile(tmp_path, profile)
    assert drift.read_profile(tmp_path) == profile
    assert drift.read_profile(tmp_path / "none") is None


# --- the statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["psi", "ks", "chi2"])
def test_a_resample_of_the_training_data_does_not_drift(
    profile: drift.ReferenceProfile, method: str
) -> None:
    threshold = {"psi": 0.1, "ks": 0.1, "chi2": 0.999}[method]
    found = scored(profile, frame(1000, 1), method, threshold)
    assert set(found) == {"tenure", "plan", "autopay", PREDICTION}
    assert not any(f.drifted for f in found.values()), found
    if method != "chi2":
        assert max(f.score for f in found.values()) < 0.06


def test_a_shifted_distribution_drifts_under_every_method(profile: drift.ReferenceProfile) -> None:
    shifted = frame(1000, 2, shift=6.0)
    psi = scored(profile, shifted, "psi")
    assert psi["tenure"].drifted and psi["tenure"].score > 0.5
    assert psi[PREDICTION].drifted and psi[PREDICTION].kind == "prediction"
    assert not psi["plan"].drifted
    ks = scored(profile, shifted, "ks", 0.1)
    assert ks["tenure"].statistic == "ks" and ks["tenure"].score > 0.3 and ks["tenure"].drifted
    assert ks["tenure"].p_value is not None and ks["tenure"].p_value < 1e-6
    assert ks["plan"].statistic == "chi2"  # categorical columns: chi-square instead of KS
    chi2 = scored(profile, shifted, "chi2", 0.99)
    assert chi2["tenure"].score > 0.999 and chi2["tenure"].drifted


def test_a_category_share_change_drifts(profile: drift.ReferenceProfile) -> None:
    found = scored(profile, frame(1000, 3, plans=(0.2, 0.3, 0.5)), "psi")
    assert found["plan"].drifted and found["plan"].kind == "categorical"
    assert not found["tenure"].drifted
    under_ks = scored(profile, frame(1000, 3, plans=(0.2, 0.3, 0.5)), "ks", 0.1)["plan"]
    assert under_ks.statistic == "chi2" and under_ks.drifted  # Cramér's V, 0..1 like D
    assert scored(profile, frame(1000, 3, plans=(0.2, 0.3, 0.5)), "chi2", 0.99)["plan"].drifted


def test_a_missing_rate_change_drifts(profile: drift.ReferenceProfile) -> None:
    found = scored(profile, frame(1000, 4, missing=0.3), "psi")
    assert found["tenure"].drifted
    assert scored(profile, frame(1000, 4, missing=0.3), "chi2", 0.99)["tenure"].drifted


def test_unseen_categories_count_as_other(profile: drift.ReferenceProfile) -> None:
    plan = profile.feature("plan")
    assert isinstance(plan, drift.CategoricalProfile)
    counts = plan.counts(pd.Series(["basic", "gold", "platinum", None]))
    assert counts.tolist() == [1, 0, 0, 2, 1]  # basic, plus, pro, other, missing
    df = frame(1000, 5)
    df.loc[:399, "plan"] = "gold"
    assert scored(profile, df, "psi")["plan"].drifted


def test_psi_counts_an_empty_bin_as_epsilon() -> None:
    value = drift.psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0]))
    assert value == 0.0
    assert np.isfinite(drift.psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))


# --- one monitor run --------------------------------------------------------------------------


def bundle(tmp_path: Path, profile: drift.ReferenceProfile) -> Path:
    directory = tmp_path / "bundle"
    directory.mkdir(exist_ok=True)
    (directory / META_FILE).write_text(META.model_dump_json())
    drift.write_profile(directory, profile)
    return directory


def log_requests(root: Path, df: pd.DataFrame, start: datetime, role: str = "stable",
                 sha256: str = "ab" * 32, part: str = "1", batch: int = 5) -> None:  # fmt: skip
    """Write request-log lines as the servers do: one line per request of `batch` rows."""
    requests = root / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    name = f"part-{start.strftime('%Y%m%dT%H%M%SZ')}-{4242}-{part}.jsonl"
    p = scores(df)
    with (requests / name).open("a") as out:
        for i in range(0, len(df), batch):
            rows = df.iloc[i : i + batch]
            instances = [
                {k: (None if pd.isna(v) else (bool(v) if k == "autopay" else v))
                 for k, v in row.items()}
                for row in rows.to_dict("records")
            ]  # fmt: skip
            line = {
                "id": f"r{i}", "at": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "deployment": "churn", "model": "churn-model-v1", "sha256": sha256, "role": role,
                "endpoint": "predict", "instances": instances,
                "predictions": [{"label": "yes" if s > 0.5 else "no", "score": float(s)}
                                for s in p[i : i + batch]],
                "latencyMs": 3.2,
            }  # fmt: skip
            out.write(json.dumps(line) + "\n")


MONITOR = Monitor(name="inputs", method="psi", threshold=0.2, minRows=200)


def run(root: Path, bundle_dir: Path, monitor: Monitor = MONITOR, since: datetime | None = None,
        until: datetime = T0 + timedelta(hours=1)) -> DriftReport:  # fmt: skip
    return run_monitor(
        monitor, deployment="churn", namespace="ml", model="churn-model-v1", sha256="ab" * 32,
        bundle_dir=bundle_dir, root=str(root), since=since, until=until,
    )  # fmt: skip


def test_run_monitor_compares_only_the_stable_window(
    tmp_path: Path, profile: drift.ReferenceProfile
) -> None:
    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    log_requests(root, frame(500, 6), T0)
    # Drifted rows that must not count: a shadow copy, another digest, before `since`, after
    # `until`.
    shifted = frame(500, 7, shift=10)
    log_requests(root, shifted, T0, role="shadow", part="2")
    log_requests(root, shifted, T0, sha256="cd" * 32, part="3")
    log_requests(root, shifted, T0 - timedelta(hours=2), part="4")
    log_requests(root, shifted, T0 + timedelta(minutes=30), part="5")
    report = run(
        root, bundle_dir, since=T0 - timedelta(minutes=5), until=T0 + timedelta(minutes=30)
    )
    assert report.rows == 500 and report.reference_rows == 3000
    assert not report.drifted and report.score is not None and report.score < 0.1
    assert {f.feature for f in report.features} == {"tenure", "plan", "autopay", PREDICTION}

    drifted = run(root, bundle_dir, since=T0 + timedelta(minutes=30))
    assert drifted.rows == 500 and drifted.drifted
    assert {f.feature for f in drifted.features if f.drifted} >= {"tenure", PREDICTION}
    assert "tenure" in drifted.message


def test_too_few_rows_give_no_verdict(tmp_path: Path, profile: drift.ReferenceProfile) -> None:
    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    log_requests(root, frame(100, 8, shift=10), T0)
    report = run(root, bundle_dir)
    assert report.rows == 100 and report.score is None and not report.drifted
    assert report.features == [] and "minRows 200" in report.message


def test_watched_features_only(tmp_path: Path, profile: drift.ReferenceProfile) -> None:
    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    log_requests(root, frame(300, 9), T0)
    monitor = MONITOR.model_copy(update={"features": ["plan", "note"]})
    report = run(root, bundle_dir, monitor)
    assert [f.feature for f in report.features] == ["plan", PREDICTION]
    assert "not profiled, not compared: note" in report.message


# --- the report files -------------------------------------------------------------------------


def test_reports_are_written_once_and_latest_is_replaced(
    tmp_path: Path, profile: drift.ReferenceProfile
) -> None:
    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    log_requests(root, frame(300, 10), T0)
    first = run(root, bundle_dir)
    uri = write_report(str(root), first)
    assert uri == f"{root}/drift/inputs/20260301T130000Z.json"
    assert write_report(str(root), first) == uri  # a retry with the same report
    changed = first.model_copy(update={"rows": 1})
    with pytest.raises(FileExistsError):
        write_report(str(root), changed)
    latest = json.loads((root / "drift" / "latest.json").read_text())
    assert latest == latest_document(first)
    assert set(latest) == {"method", "deployment", "monitor", "until", "features"}
    assert latest["method"] == "psi" and latest["until"] == "2026-03-01T13:00:00Z"
    assert {f["feature"] for f in latest["features"]} == {"tenure", "plan", "autopay", PREDICTION}
    assert all(set(f) == {"feature", "score"} for f in latest["features"])
    # A run with no verdict is kept, but does not replace the exported scores.
    empty = run(root, bundle_dir, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))
    write_report(str(root), empty)
    assert json.loads((root / "drift" / "latest.json").read_text()) == latest
    assert [r.until for r in read_reports(str(root), "inputs")] == [first.until, empty.until]
    assert last_until(str(root), "inputs") == empty.until


# --- the alert --------------------------------------------------------------------------------


class _Capture(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        _Capture.received.append(json.loads(self.rfile.read(length)))
        self.send_response(_Capture.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def webhook() -> Any:
    _Capture.received, _Capture.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def drifted_report() -> DriftReport:
    return DriftReport(
        deployment="churn", namespace="ml", monitor="inputs", model="churn-model-v1",
        sha256="ab" * 32, method="psi", threshold=0.2, until=T0, rows=500, score=0.8,
        drifted=True, message="psi above 0.2 on tenure",
        features=[FeatureDrift(feature="tenure", kind="numeric", statistic="psi", score=0.8,
                               p_value=0.0, drifted=True)],
    )  # fmt: skip


def test_post_alert_sends_slack_json(webhook: str) -> None:
    assert post_alert(webhook, drifted_report()) is None
    (payload,) = _Capture.received
    assert "churn" in payload["text"] and "tenure" in payload["text"]
    assert isinstance(payload["blocks"], list) and payload["blocks"][0]["type"] == "header"
    assert "`tenure` psi 0.8" in json.dumps(payload["blocks"])


def test_post_alert_never_raises(webhook: str) -> None:
    _Capture.status = 500
    assert "500" in (post_alert(webhook, drifted_report()) or "")
    assert "webhook failed" in (post_alert("http://127.0.0.1:9/none", drifted_report(), 0.5) or "")


def test_the_entry_point_writes_the_report_and_alerts(
    tmp_path: Path, profile: drift.ReferenceProfile, webhook: str
) -> None:
    from aiml024.runtime.bundle import bundle_digest

    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    digest = bundle_digest(bundle_dir)
    log_requests(root, frame(400, 11, shift=10), T0, sha256=digest)
    monitor = MONITOR.model_copy(update={"webhook": webhook})
    argv = ["--deployment", "churn", "--namespace", "ml", "--monitor", monitor.model_dump_json(by_alias=True),
            "--model", "churn-model-v1", "--sha256", digest, "--model-uri", str(bundle_dir),
            "--root", f"file://{root}"]  # fmt: skip
    assert main(argv, now=T0 + timedelta(hours=1)) == 0
    (report,) = read_reports(str(root), "inputs")
    assert report.drifted and report.rows == 400 and report.message.endswith("alert sent")
    assert len(_Capture.received) == 1
    # The next run starts where this one ended: nothing new, no verdict, no alert.
    assert main(argv, now=T0 + timedelta(hours=2)) == 0
    reports = read_reports(str(root), "inputs")
    assert reports[1].since == T0 + timedelta(hours=1) and reports[1].score is None
    assert len(_Capture.received) == 1
    wrong = [("00" * 32 if item == digest else item) for item in argv]
    assert main(wrong) == 2  # not the bundle the Model registered


def test_the_operator_reads_the_newest_report_back(
    tmp_path: Path, profile: drift.ReferenceProfile
) -> None:
    from aiml024 import audit
    from aiml024.operator.monitors import newest_reports

    root, bundle_dir = tmp_path / "serving", bundle(tmp_path, profile)
    log_requests(root, frame(300, 12, shift=10), T0)
    first = run(root, bundle_dir)
    write_report(f"file://{root}", first)
    later = run(root, bundle_dir, since=first.until, until=first.until + timedelta(hours=1))
    write_report(f"file://{root}", later)
    found = newest_reports(f"file://{root}", ["inputs", "absent"])
    assert list(found) == ["inputs"]
    uri, report = found["inputs"]
    assert report == later and uri == f"file://{root}/drift/inputs/20260301T140000Z.json"
    subject = {"kind": "Deployment", "namespace": "ml", "name": "churn"}
    record = audit.retrain_record(
        subject, "inputs", "churn", 4, "s3://d",
        [f.feature for f in first.features if f.drifted], "operator",
    )  # fmt: skip
    assert record.kind == "retrain" and record.details["generation"] == 4
    assert "tenure" in record.details["drifted"]


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://localhost.evil.example/", "ftp://x/"]
)
def test_a_webhook_over_plain_http_may_only_reach_this_machine(url: str) -> None:
    """The monitor posts with the runtime's identity: no plain-HTTP reach into a cluster."""
    with pytest.raises(ValueError, match="webhook"):
        Monitor(webhook=url)
    assert Monitor(webhook="https://hooks.slack.com/services/T/B/x").webhook
    assert Monitor(webhook="http://127.0.0.1:8080/alerts").webhook
