"""`aiml024 lineage model/NAME [--json]`: where a registered model came from and where it serves.

The graph, from the local store: dataset (uri, fingerprint) -> transform (the Experiment spec's
hash, the code version, the run) -> trial (the best single trial) -> Model (name, artifact
digest) -> the Deployments that route to it (role, share of traffic, whether they serve this
digest now). A Model registered by hand from an artifact has no dataset, transform or trial.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from ..api import Deployment, Model, SpecError, describe_validation_error, kind_for
from ..api.common import DEFAULT_NAMESPACE
from ..local.store import NotFound, Store, state_home

errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)


def lineage(
    ref: Annotated[str, typer.Argument(help="model/NAME")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the graph as JSON.")] = False,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = DEFAULT_NAMESPACE,
) -> None:
    """Show a Model's lineage: dataset -> transform -> trial -> model -> deployments."""
    try:
        name = _model_name(ref)
        store = Store(state_home())
        model = Model.model_validate(store.get("Model", name, namespace))
    except (NotFound, ValueError) as error:
        problem = (
            "; ".join(describe_validation_error(error))
            if isinstance(error, ValidationError)
            else str(error)
        )
        errors.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    graph = lineage_graph(model, store.list("Deployment", namespace))
    if as_json:
        typer.echo(json.dumps(graph, indent=2))
    else:
        typer.echo(render_text(graph))


def _model_name(ref: str) -> str:
    kind, _, name = ref.partition("/")
    try:
        if kind_for(kind) == "Model" and name:
            return name
    except SpecError:
        pass
    raise ValueError(f"expected model/NAME, not {ref!r}")


def lineage_graph(model: Model, deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """The lineage as one JSON document: dataset, transform, trial, model, deployments."""
    status = model.status
    found = status.lineage if status else None
    trial_number = model.spec.source.trial
    row = next((e for e in (status.leaderboard if status else []) if e.trial == trial_number), None)
    return {
        "dataset": (
            {"uri": found.dataset_uri, "fingerprint": found.dataset_fingerprint} if found else None
        ),
        "transform": (
            {
                "specHash": found.spec_hash,
                "codeVersion": found.code_version,
                "experiment": found.experiment,
                "workflow": found.workflow,
                "seed": found.seed,
            }
            if found
            else None
        ),
        "trial": (
            {
                "number": trial_number,
                "learner": row.name if row else None,
                "value": row.value if row else None,
            }
            if trial_number is not None
            else None
        ),
        "model": {
            "name": model.metadata.name,
            "namespace": model.metadata.namespace or DEFAULT_NAMESPACE,
            "sha256": status.sha256 if status else None,
            "artifactUri": status.artifact_uri if status else None,
            "stage": status.stage if status else "none",
            "cardSignature": (
                status.card_signature.wire() if status and status.card_signature else None
            ),
        },
        "deployments": _serving(model, deployments),
    }


def _serving(model: Model, deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Deployment route that names `model`, with whether it serves its digest now."""
    sha = model.status.sha256 if model.status else None
    found = []
    for document in sorted(deployments, key=lambda d: d["metadata"]["name"]):
        try:
            dep = Deployment.model_validate(document)
        except ValidationError:
            continue
        status = dep.status
        for route in dep.spec.routes():
            if route.model != model.metadata.name:
                continue
            served = (status.models if status else {}).get(route.role)
            found.append(
                {
                    "name": dep.metadata.name,
                    "role": route.role,
                    "weight": route.weight,
                    "phase": (status.phase if status else None) or "Pending",
                    "endpoint": status.endpoint if status else None,
                    "servedSha256": served,
                    "servesThisModel": served is not None and served == sha,
                }
            )
    return found


def render_text(graph: dict[str, Any]) -> str:
    dataset, transform, trial = graph["dataset"], graph["transform"], graph["trial"]
    model = graph["model"]
    lines = []
    if dataset:
        lines.append(f"dataset     {dataset['uri']}  fingerprint {dataset['fingerprint']}")
    else:
        lines.append(f"dataset     unknown: registered from the artifact {model['artifactUri']}")
    if transform:
        run = ", ".join(
            f"{key} {transform[key]}"
            for key in ("experiment", "workflow", "seed")
            if transform[key] is not None
        )
        lines.append(
            f"-> transform spec sha256 {transform['specHash']}  code {transform['codeVersion']}"
            + (f"  ({run})" if run else "")
        )
    if trial:
        scored = (
            f"  {trial['learner']}, cross-validated {trial['value']:.4f}"
            if trial["learner"] is not None
            else ""
        )
        lines.append(f"-> trial     #{trial['number']}{scored}")
    lines.append(
        f"-> model     {model['name']}  sha256 {model['sha256']}  stage {model['stage']}"
        + ("  card signed" if model["cardSignature"] else "")
    )
    if not graph["deployments"]:
        lines.append("-> deployment: none routes to this model")
    for dep in graph["deployments"]:
        share = "shadow (a copy of traffic)" if dep["weight"] is None else f"{dep['weight']}%"
        where = f" at {dep['endpoint']}" if dep["endpoint"] else ""
        serving = (
            "serving this digest"
            if dep["servesThisModel"]
            else f"not serving this digest (serves {dep['servedSha256'] or 'nothing'})"
        )
        lines.append(
            f"-> deployment {dep['name']}  {dep['role']} {share}  {dep['phase']}{where}, {serving}"
        )
    return "\n".join(lines)
