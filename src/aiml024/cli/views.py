"""What the CLI shows: kubectl-like tables, describe pages, decisions and the served endpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from ..api import Model
from ..local.store import Store


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    seconds = int(
        (
            datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        ).total_seconds()
    )
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _fmt(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _experiment_row(obj: dict[str, Any], wide: bool) -> list[str]:
    status = obj.get("status") or {}
    done, total = (
        status.get("trialsCompleted", 0),
        status.get("trialsTotal") or obj["spec"]["search"]["trials"],
    )
    row = [obj["metadata"]["name"], obj["spec"]["task"], status.get("phase", "Pending"),
           f"{done}/{total}", status.get("metric") or "-", _fmt(status.get("bestValue")),
           age(obj["metadata"].get("creationTimestamp"))]  # fmt: skip
    if wide:
        row += [status.get("workflowName") or "-", status.get("modelName") or "-"]
    return row


def _model_row(obj: dict[str, Any], wide: bool) -> list[str]:
    status = obj.get("status") or {}
    metric = status.get("primaryMetric")
    value = (status.get("metrics") or {}).get(metric) if metric else None
    baseline = (status.get("baselineMetrics") or {}).get(metric) if metric else None
    policy = status.get("policy") or {}
    row = [obj["metadata"]["name"], obj["spec"]["task"], status.get("stage", "none"), obj["spec"]["stage"],
           policy.get("decision", "-"), f"{metric}={_fmt(value)}" if metric else "-", _fmt(baseline),
           age(obj["metadata"].get("creationTimestamp"))]  # fmt: skip
    if wide:
        row += [(status.get("sha256") or "-")[:12], status.get("artifactUri") or "-"]
    return row


def _deployment_row(obj: dict[str, Any], wide: bool) -> list[str]:
    status = obj.get("status") or {}
    traffic = ",".join(f"{k}={v}%" for k, v in (status.get("traffic") or {}).items()) or "-"
    row = [obj["metadata"]["name"], obj["spec"]["model"], status.get("phase", "Pending"), traffic,
           status.get("endpoint") or "<none>", age(obj["metadata"].get("creationTimestamp"))]  # fmt: skip
    if wide:
        rollout = status.get("rollout") or {}
        moving = (
            f"{rollout['candidate']} {rollout.get('phase')} {rollout.get('weight', 0)}%"
            if rollout
            else "-"
        )
        drift = status.get("drift") or {}
        worst = max(drift.items(), key=lambda kv: kv[1], default=None)
        row += [
            status.get("sloState", "Unknown"),
            moving,
            f"{worst[0]}={worst[1]:.2f}" if worst else "-",
        ]
    return row


_COLUMNS = {
    "Experiment": (["NAME", "TASK", "PHASE", "TRIALS", "METRIC", "BEST", "AGE"], ["WORKFLOW", "MODEL"], _experiment_row),
    "Model": (["NAME", "TASK", "STAGE", "DESIRED", "DECISION", "METRIC", "BASELINE", "AGE"], ["SHA256", "ARTIFACT"], _model_row),
    "Deployment": (["NAME", "MODEL", "PHASE", "TRAFFIC", "ENDPOINT", "AGE"], ["SLO", "ROLLOUT", "DRIFT"], _deployment_row),
}  # fmt: skip


def table(kind: str, objects: list[dict[str, Any]], wide: bool = False) -> Table:
    columns, wide_columns, row = _COLUMNS[kind]
    out = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns + (wide_columns if wide else []):
        out.add_column(column, no_wrap=True)
    for obj in objects:
        out.add_row(*row(obj, wide))
    return out


def describe(console: Console, obj: dict[str, Any], events: list[dict[str, Any]]) -> None:
    meta, status = obj["metadata"], obj.get("status") or {}
    console.print(f"[bold]Name:[/]         {meta['name']}")
    console.print(f"[bold]Namespace:[/]    {meta.get('namespace', 'default')}")
    console.print(f"[bold]Kind:[/]         {obj['kind']} ({obj['apiVersion']})")
    console.print(
        f"[bold]Generation:[/]   {meta.get('generation')} (observed {status.get('observedGeneration', '-')})"
    )
    console.print(f"[bold]Created:[/]      {meta.get('creationTimestamp')}")
    console.print(f"[bold]Phase:[/]        {status.get('phase', 'Pending')}")
    if status.get("message"):
        console.print(f"[bold]Message:[/]      {status['message']}")
    if obj["kind"] == "Model":
        _describe_model(console, status)
    elif obj["kind"] == "Deployment":
        console.print(f"[bold]Endpoint:[/]     {status.get('endpoint') or '<none>'}")
        console.print(f"[bold]Traffic:[/]      {json.dumps(status.get('traffic', {}))}")
        rollout = status.get("rollout")
        if rollout:
            console.print(
                f"[bold]Rollout:[/]      {rollout['strategy']} of {rollout['candidate']}: "
                f"{rollout.get('phase')}, {rollout.get('message', '')}"
            )
        for monitor in status.get("monitors") or []:
            console.print(
                f"[bold]Monitor:[/]      {monitor['name']}: last run {monitor['lastRun']}, "
                f"score {_fmt(monitor.get('score'))}, drifted {monitor.get('drifted', False)}"
            )
    conditions = Table(title="Conditions", box=None, title_justify="left", header_style="bold")
    for column in ("TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"):
        conditions.add_column(column, overflow="fold")
    for c in status.get("conditions", []):
        conditions.add_row(
            c["type"], c["status"], c["reason"], c["lastTransitionTime"], c.get("message", "")
        )
    console.print(conditions)
    leaderboard = status.get("leaderboard") or []
    if leaderboard:
        board = Table(title="Leaderboard", box=None, title_justify="left", header_style="bold")
        for column in ("RANK", "MODEL", "VALUE", "TRIAL", "MEMBERS"):
            board.add_column(column, overflow="fold")
        for entry in leaderboard:
            board.add_row(str(entry["rank"]), entry["name"], _fmt(entry["value"]),
                          _fmt(entry.get("trial")), ", ".join(entry.get("members", [])))  # fmt: skip
        console.print(board)
    log = Table(title="Events", box=None, title_justify="left", header_style="bold")
    for column in ("TYPE", "REASON", "AGE", "MESSAGE"):
        log.add_column(column, overflow="fold")
    for e in events:
        log.add_row(e["type"], e["reason"], age(e["lastTimestamp"]), e["message"])
    console.print(log)


def _describe_model(console: Console, status: dict[str, Any]) -> None:
    console.print(f"[bold]Stage:[/]        {status.get('stage', 'none')}")
    console.print(f"[bold]Artifact:[/]     {status.get('artifactUri')}")
    console.print(f"[bold]SHA256:[/]       {status.get('sha256')}")
    metrics = status.get("metrics") or {}
    baseline = status.get("baselineMetrics") or {}
    console.print("[bold]Metrics[/] (holdout; baseline = default LightGBM):")
    for key, value in metrics.items():
        console.print(f"  {key:<10} {_fmt(value):>8}   baseline {_fmt(baseline.get(key)):>8}")
    policy = status.get("policy")
    if policy:
        console.print(f"[bold]Policy:[/]       {policy['decision']} for {policy['stage']} "
                      f"(bundle {policy['bundleDigest'][:12]})")  # fmt: skip
        for violation in policy.get("violations", []):
            console.print(f"  - {violation}")
    for approval in status.get("approvals", []):
        console.print(
            f"[bold]Approved:[/]     {approval['user']} for {approval['stage']} at {approval['at']}"
        )
    lineage = status.get("lineage") or {}
    if lineage:
        console.print(f"[bold]Lineage:[/]      dataset {lineage.get('datasetFingerprint', '')[:12]}, "
                      f"spec {lineage.get('specHash', '')[:12]}, code {lineage.get('codeVersion')}")  # fmt: skip


def print_decision(console: Console, model: Model) -> None:
    assert model.status is not None and model.status.policy is not None
    policy = model.status.policy
    colour = {"allow": "green", "deny": "red", "require_approval": "yellow"}[policy.decision]
    console.print(f"model/{model.metadata.name}: [bold {colour}]{policy.decision}[/] for stage {policy.stage}; "
                  f"now in stage [bold]{model.status.stage}[/]")  # fmt: skip
    for violation in policy.violations:
        console.print(f"  - {violation}")
    if policy.decision == "require_approval":
        console.print(f"  waiting for approval: another person runs `aiml024 approve model/{model.metadata.name}"
                      f" --stage {policy.stage}`")  # fmt: skip


def print_model_summary(console: Console, store: Store, name: str) -> None:
    obj = store.get("Model", name)
    status = obj.get("status") or {}
    metric = status.get("primaryMetric")
    metrics, baseline = status.get("metrics") or {}, status.get("baselineMetrics") or {}
    if metric in metrics:
        console.print(f"model/{name}: holdout {metric} [bold]{metrics[metric]:.4f}[/] "
                      f"(default LightGBM baseline {_fmt(baseline.get(metric))})")  # fmt: skip
    policy = status.get("policy") or {}
    if policy:
        console.print(f"model/{name}: policy says [bold]{policy['decision']}[/] for {policy['stage']}; "
                      f"stage {status.get('stage')}")  # fmt: skip


def print_serving(console: Console, store: Store, name: str, endpoint: str) -> None:
    from ..local.sample import sample_prediction

    dep = store.get("Deployment", name)
    console.print(f"deployment/{name}: serving at [bold]{endpoint}[/]")
    console.print(f"  V2:  POST {endpoint}/v2/models/{dep['spec']['model']}/infer")
    console.print(f"  PRD: POST {endpoint}/v1/inference/{name}:predict")
    try:
        request, response = sample_prediction(store, name, endpoint)
    except Exception as error:  # the demo's last line; serving itself already succeeded
        console.print(f"[yellow]could not send a sample prediction: {error}[/]")
        return
    console.print("one real prediction:")
    console.print_json(json.dumps({"request": request, "response": response}, default=str))
