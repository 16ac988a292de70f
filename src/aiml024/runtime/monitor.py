"""One drift monitor run: the requests logged since the last run against the served bundle's
reference profile (aiml024.runtime.drift), written to the store as a DriftReport.

    python -m aiml024.runtime.monitor --deployment D --namespace N --monitor JSON \\
        --model M --sha256 H --model-uri URI --root URI

`--root` is the Deployment's `api.monitoring.monitor_root`; `--monitor` the Monitor (wire
JSON). The run reads `<root>/requests/part-*.jsonl` logged in [since, until) by the stable
predictor (shadow copies and other roles are left out), where `since` is the `until` of the
monitor's newest report (`<root>/drift/<monitor>/`) and `until` is now; it writes
`<root>/drift/<monitor>/<until>.json` once and, when the report has a verdict, replaces
`<root>/drift/latest.json` (what the model servers export as `aiml024_drift_score`). A drifted
report is posted to the monitor's webhook (Slack-compatible). Exit 0 whether or not the data
drifted; 2 on a bad argument, a bundle whose digest is not --sha256, or one with no profile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from aiml024.api.deployment import Monitor
from aiml024.api.monitoring import DRIFT, LATEST_DRIFT, REQUESTS, DriftReport
from aiml024.files import write_atomic

from ..servinglog import newest_report, read_records
from .bundle import META_FILE, Bundle, BundleMeta, bundle_digest
from .drift import compare, read_profile, unwatched

STAMP = "%Y%m%dT%H%M%SZ"  # report and request-log part names
STABLE = "stable"
ALERT_TIMEOUT = 5.0  # seconds


def stamp(at: datetime) -> str:
    return _utc(at).strftime(STAMP)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def report_path(root: str, monitor: str, until: datetime) -> str:
    return f"{root.rstrip('/')}/{DRIFT}/{monitor}/{stamp(until)}.json"


def latest_path(root: str) -> str:
    return f"{root.rstrip('/')}/{DRIFT}/{LATEST_DRIFT}"


# --- the request log --------------------------------------------------------------------------


def _read_requests(root: str, since: datetime | None, until: datetime) -> Iterator[dict[str, Any]]:
    """Request-log records logged in [since, until) (aiml024.runtime.requestlog's reader)."""
    for record in read_records(root, REQUESTS, since):
        at = _parse_time(record.get("at")) if isinstance(record, dict) else None
        if at is None or at >= until or (since is not None and at < _utc(since)):
            continue
        yield record


def served_rows(
    records: Iterator[dict[str, Any]] | list[dict[str, Any]], sha256: str
) -> tuple[list[dict[str, Any]], list[float]]:
    """The instances the stable predictor served (this digest, no shadow copy), with their
    predicted scores (NaN where a prediction has none)."""
    rows: list[dict[str, Any]] = []
    scores: list[float] = []
    for record in records:
        if record.get("role") != STABLE or record.get("shadow"):
            continue
        if record.get("sha256") and record["sha256"] != sha256:
            continue  # served by an earlier stable Model: not this reference's population
        instances = record.get("instances") or []
        predictions = record.get("predictions") or []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                continue
            rows.append(instance)
            prediction = predictions[i] if i < len(predictions) else None
            score = prediction.get("score") if isinstance(prediction, dict) else None
            scores.append(float(score) if isinstance(score, (int, float)) else float("nan"))
    return rows, scores


def typed_rows(meta: BundleMeta, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The logged instances typed as the bundle types requests (unknown keys dropped)."""
    bundle = Bundle(None, meta)
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    known = [c for c in frame.columns if c in bundle.known_columns()]
    return bundle.frame(frame[known])


# --- one run ----------------------------------------------------------------------------------


def run_monitor(
    monitor: Monitor,
    *,
    deployment: str,
    namespace: str,
    model: str,
    sha256: str,
    bundle_dir: Path,
    root: str,
    since: datetime | None,
    until: datetime,
) -> DriftReport:
    """Compare the stable predictor's requests logged in [since, until) under `root` with the
    reference profile in `bundle_dir`. Fewer than monitor.minRows rows: no verdict (score
    None, not drifted)."""
    until = _utc(until)
    report = DriftReport(
        deployment=deployment,
        namespace=namespace,
        monitor=monitor.name,
        model=model,
        sha256=sha256,
        method=monitor.method,
        threshold=monitor.threshold,
        since=_utc(since) if since is not None else None,
        until=until,
        rows=0,
    )
    profile = read_profile(bundle_dir)
    if profile is None:
        report.message = f"model {model} has no reference profile (trained before drift monitors)"
        return report
    report.reference_rows = profile.rows
    meta = BundleMeta.model_validate_json((bundle_dir / META_FILE).read_text())
    rows, scores = served_rows(_read_requests(root, since, until), sha256)
    report.rows = len(rows)
    if len(rows) < monitor.min_rows:
        report.message = (
            f"{len(rows)} rows logged by the stable predictor since "
            f"{report.since.isoformat() if report.since else 'the start'}; a verdict needs "
            f"minRows {monitor.min_rows}"
        )
        return report
    frame = typed_rows(meta, rows)
    report.features = compare(
        profile,
        frame,
        np.asarray(scores, dtype=float),
        monitor.method,
        monitor.threshold,
        list(monitor.features),
    )
    notes = []
    missing = unwatched(profile, list(monitor.features))
    if missing:
        notes.append(f"not profiled, not compared: {', '.join(missing)}")
    report.score = max((f.score for f in report.features), default=None)
    drifted = [f.feature for f in report.features if f.drifted]
    report.drifted = bool(drifted)
    summary = (
        f"{monitor.method} above {monitor.threshold:g} on {', '.join(drifted)}"
        if drifted
        else f"no {monitor.method} score above {monitor.threshold:g}"
    )
    report.message = "; ".join([f"{summary} ({len(rows)} rows)", *notes])
    return report


# --- the report files -------------------------------------------------------------------------


def latest_document(report: DriftReport) -> dict[str, Any]:
    """drift/latest.json: what the model servers export as aiml024_drift_score
    {deployment, method, feature}."""
    return {
        "method": report.method,
        "deployment": report.deployment,
        "monitor": report.monitor,
        "until": report.until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "features": [{"feature": f.feature, "score": f.score} for f in report.features],
    }


def write_report(root: str, report: DriftReport) -> str:
    """Write `drift/<monitor>/<until>.json` once (an existing one is never replaced:
    FileExistsError, unless it holds the same report) and, when the report has a verdict,
    replace `drift/latest.json`. Returns the report's URI."""
    uri = report_path(root, report.monitor, report.until)
    text = json.dumps(report.wire(), sort_keys=True, indent=1) + "\n"
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        with fs.open(path, "rt", encoding="utf-8") as handle:
            if handle.read() != text:
                raise FileExistsError(f"{uri} exists with another report; reports are written once")
    else:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        _write(fs, path, text)
    if report.score is not None:
        latest_fs, latest = fsspec.core.url_to_fs(latest_path(root))
        _write(latest_fs, latest, json.dumps(latest_document(report), sort_keys=True) + "\n")
    return uri


def _write(fs: Any, path: str, text: str) -> None:
    if isinstance(fs, LocalFileSystem):
        write_atomic(Path(path), text)  # readers never see half a file
    else:
        fs.pipe_file(path, text.encode())  # object stores replace whole objects


def read_reports(root: str, monitor: str) -> list[DriftReport]:
    """Every report of `monitor` under `root`, oldest first."""
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{DRIFT}/{monitor}")
    if not fs.exists(base):
        return []
    out = []
    for path in sorted(fs.glob(f"{base}/*.json")):
        with fs.open(path, "rt", encoding="utf-8") as handle:
            out.append(DriftReport.model_validate_json(handle.read()))
    return out


def last_until(root: str, monitor: str) -> datetime | None:
    """The `until` of the monitor's newest report: where the next run starts."""
    newest = newest_report(root, monitor)
    return newest[1].until if newest else None


# --- alerts -----------------------------------------------------------------------------------


def alert_payload(report: DriftReport) -> dict[str, Any]:
    """A Slack-compatible message (`text` for notifications, `blocks` for the layout)."""
    drifted = [f for f in report.features if f.drifted]
    title = (
        f"Drift on {report.namespace}/{report.deployment}: monitor {report.monitor} "
        f"({report.method} > {report.threshold:g})"
    )
    lines = [
        f"• `{f.feature}` {f.statistic} {f.score:.4g}"
        + (f" (p={f.p_value:.3g})" if f.p_value is not None else "")
        for f in sorted(drifted, key=lambda f: -f.score)[:20]
    ]
    window = (
        f"{report.since.isoformat() if report.since else 'start'} to {report.until.isoformat()}"
    )
    return {
        "text": f"{title}: {', '.join(f.feature for f in drifted) or 'no feature'}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"Model `{report.model}` ({report.sha256[:12]}), {report.rows} rows "
                    f"from {window}.\n" + "\n".join(lines),
                },
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": report.message[:300]}]},
        ],
    }


def post_alert(webhook_url: str, report: DriftReport, timeout: float = ALERT_TIMEOUT) -> str | None:
    """POST the alert; None when the webhook took it, else why not (never raises)."""
    try:
        import httpx

        # No redirects, and nothing of the answer is kept: the report and its events are read
        # by namespace users, and the URL is theirs to choose.
        response = httpx.post(
            webhook_url, json=alert_payload(report), timeout=timeout, follow_redirects=False
        )
        if response.status_code >= 300:
            return f"webhook answered HTTP {response.status_code}"
        return None
    except Exception as error:  # any failure is reported, never raised: the report stands
        return f"webhook failed: {type(error).__name__}: {error}"


# --- the cluster entry point ------------------------------------------------------------------


def fetch_bundle(uri: str) -> tuple[Path, Path | None]:
    """A local directory holding the bundle, and the temporary one to remove (remote URIs)."""
    if "://" not in uri:
        return Path(uri), None
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://")), None
    target = Path(tempfile.mkdtemp(prefix="aiml024-monitor-"))
    fs, path = fsspec.core.url_to_fs(uri)
    fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    return target, target


def main(argv: Sequence[str] | None = None, now: datetime | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiml024.runtime.monitor")
    for name in ("deployment", "namespace", "monitor", "model", "sha256", "model-uri", "root"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    try:
        monitor = Monitor.model_validate_json(args.monitor)
    except ValueError as error:
        print(f"error: invalid --monitor: {error}", file=sys.stderr)
        return 2
    bundle_dir, temporary = fetch_bundle(args.model_uri)
    try:
        digest = bundle_digest(bundle_dir)
        if digest != args.sha256:
            print(
                f"error: bundle at {args.model_uri} has sha256 {digest}, not {args.sha256}",
                file=sys.stderr,
            )
            return 2
        until = (now or datetime.now(UTC)).replace(microsecond=0)
        report = run_monitor(
            monitor,
            deployment=args.deployment,
            namespace=args.namespace,
            model=args.model,
            sha256=args.sha256,
            bundle_dir=bundle_dir,
            root=args.root,
            since=last_until(args.root, monitor.name),
            until=until,
        )
        if read_profile(bundle_dir) is None:
            print(f"error: {report.message}", file=sys.stderr)
            return 2
        if report.drifted and monitor.webhook:
            problem = post_alert(monitor.webhook, report)
            report.message += f"; alert not delivered: {problem}" if problem else "; alert sent"
        uri = write_report(args.root, report)
    finally:
        if temporary is not None:
            import shutil

            shutil.rmtree(temporary, ignore_errors=True)
    event = {"event": "drift", "monitor": monitor.name, "report": uri, "rows": report.rows,
             "score": report.score, "drifted": report.drifted}  # fmt: skip
    print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
