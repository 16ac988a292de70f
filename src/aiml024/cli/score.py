"""`aiml024 score`: batch predictions for a file, with a registered Model.

    aiml024 score model/churn-model-v1 --input customers.csv.gz --output scores.parquet
    aiml024 score deployment/churn --input customers.parquet --output scores.parquet
    aiml024 score -f examples/churn/deployment.yaml --input ... --output ...
    aiml024 score model/churn-model-v1 --input s3://.../in.parquet --output s3://.../out.parquet \
        --compile | kubectl create -f -

The Model comes from the local store (a Deployment: the Model its stable route serves,
`spec.model`). Before scoring, the bundle's files must give the sha256 the Model records, and
through a Deployment the Model must pass the Deployment's `requireStage` (the rule that gates
serving, aiml024.reconcile.deployment.servable_problem); a Model named directly needs only a
registered artifact, unless `--require-stage` asks for more. `--compile` prints the cluster's
batch Workflow (aiml024.compiler.batch) instead of scoring.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from ..api import Deployment, Model, SpecError, describe_validation_error, kind_for
from ..api.common import DEFAULT_NAMESPACE
from ..local.store import InvalidName, NotFound, Store, state_home

console = Console(width=None if sys.stdout.isatty() else 400)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

STAGES = ("staging", "production", "any")


class ScoreCommandError(Exception):
    """The command cannot score: the message says why."""


def score(
    ref: Annotated[
        str | None,
        typer.Argument(help="model/NAME or deployment/NAME (or use -f)", show_default=False),
    ] = None,
    filename: Annotated[
        Path | None,
        typer.Option("--filename", "-f", help="A manifest file of one Deployment or Model."),
    ] = None,
    input: Annotated[
        str, typer.Option("--input", help="Parquet or CSV (.csv.gz ok): a path or URI.")
    ] = "",
    output: Annotated[
        str, typer.Option("--output", help="The Parquet file to write: a path or URI.")
    ] = "",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the output if it exists.")
    ] = False,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", min=1, help="Rows read and scored at a time.")
    ] = 200_000,
    require_stage: Annotated[
        str | None,
        typer.Option(
            "--require-stage",
            help="Score only with a Model whose recorded policy decision allows this stage "
            "(staging, production or any). Through a Deployment its requireStage holds too.",
        ),
    ] = None,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Print the Argo Workflow that scores in a cluster (kubectl create -f -) "
            "instead of scoring here.",
        ),
    ] = False,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = DEFAULT_NAMESPACE,
) -> None:
    """Score a file with a registered Model (or the one a Deployment serves) into Parquet."""
    from ..runtime.errors import StepError

    try:
        if not input or not output:
            raise ScoreCommandError("score needs --input PATH and --output PATH")
        if require_stage is not None and require_stage not in STAGES:
            raise ScoreCommandError(
                f"--require-stage must be staging, production or any, not {require_stage!r}"
            )
        if compile_ and filename is not None and (model := _external_model(filename)):
            # A Model that names its artifact and digest: what the cluster registers is that.
            _print_workflow(model, input, output)
            return
        model, required, via = resolve_model(ref, filename, namespace, require_stage)
        check_servable(model, required, via)
        if compile_:
            _print_workflow(model, input, output)
            return
        _score(model, via, input, output, overwrite, chunk_rows)
    except (ScoreCommandError, StepError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


# --- which Model ------------------------------------------------------------------------------


def resolve_model(
    ref: str | None, filename: Path | None, namespace: str, require_stage: str | None
) -> tuple[Model, list[str], str]:
    """The registered Model to score with, the stages it must pass, and how it was named
    (`model/NAME`, or `deployment/NAME -> model/NAME`)."""
    if (ref is None) == (filename is None):
        raise ScoreCommandError("score takes model/NAME, deployment/NAME or -f MANIFEST (one)")
    store = Store(state_home())
    obj: Model | Deployment
    if filename is not None:
        obj = _from_manifest(filename)
        namespace = obj.metadata.namespace or namespace
    else:
        assert ref is not None
        kind, _, name = ref.partition("/")
        try:
            kind = kind_for(kind)
        except SpecError:
            kind = ""
        if kind not in ("Model", "Deployment") or not name:
            raise ScoreCommandError(f"expected model/NAME or deployment/NAME, not {ref!r}")
        obj = _stored(store, Deployment if kind == "Deployment" else Model, name, namespace)
    required = [require_stage] if require_stage else []
    if isinstance(obj, Deployment):
        # The stable route's Model (the rollout's candidate gets only a share of traffic).
        name = obj.spec.model
        model = _stored(store, Model, name, namespace)
        required.insert(0, obj.spec.require_stage)
        via = f"deployment/{obj.metadata.name} -> model/{name}"
    else:
        # The store's record, never the manifest's status: only the platform registers.
        model = _stored(store, Model, obj.metadata.name, namespace)
        via = f"model/{model.metadata.name}"
    return model, required or ["any"], via


def _from_manifest(filename: Path) -> Model | Deployment:
    from ..local.manifests import load_manifests

    try:
        objects = load_manifests(filename)
    except SpecError as error:
        raise ScoreCommandError(str(error)) from None
    if len(objects) != 1 or not isinstance(objects[0], Model | Deployment):
        kinds = ", ".join(o.kind for o in objects) or "nothing"
        raise ScoreCommandError(
            f"{filename}: expected one Deployment or Model manifest, found {kinds}"
        )
    return objects[0]


def _external_model(filename: Path) -> Model | None:
    """The manifest's Model when it names an artifact and its digest (spec.source)."""
    obj = _from_manifest(filename)
    if isinstance(obj, Model) and obj.spec.source.artifact_uri and obj.spec.source.sha256:
        return obj
    return None


def _stored(store: Store, kind: type[Model] | type[Deployment], name: str, namespace: str) -> Any:
    try:
        return kind.model_validate(store.get(kind.__name__, name, namespace))
    except (NotFound, InvalidName) as error:
        raise ScoreCommandError(f"{error} (in {store.home})") from None
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise ScoreCommandError(
            f"{kind.__name__.lower()}/{name} in the store is not valid: {problems}"
        ) from None


# --- scoring here -----------------------------------------------------------------------------


def check_servable(model: Model, required: list[str], via: str) -> None:
    """Refuse a Model without a registered artifact and digest, or below a required stage."""
    from ..reconcile.deployment import servable_problem

    for stage in dict.fromkeys(required):
        problem = servable_problem(model, stage)
        if problem:
            raise ScoreCommandError(f"{via}: {problem}; not scoring")


def _score(
    model: Model,
    via: str,
    input: str,
    output: str,
    overwrite: bool,
    chunk_rows: int,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..runtime.score import check_output, input_format, score_file, verified_bundle

    input_format(input)
    check_output(output, overwrite)
    assert model.status is not None and model.status.artifact_uri and model.status.sha256
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=False,
    )
    with verified_bundle(model.status.artifact_uri, model.status.sha256) as directory:
        with bars:
            task = bars.add_task(f"scoring with {model.metadata.name}", total=None)

            def progress(done: int, total: int | None) -> None:
                bars.update(task, completed=done, total=total)

            summary = score_file(
                directory, input, output, chunk_rows, progress=progress, overwrite=overwrite
            )
    console.print(
        f"scored {summary.rows} rows with {via} (sha256 {model.status.sha256[:12]}) in "
        f"{summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s) -> {summary.output}",
        highlight=False,
        soft_wrap=True,
    )


def _print_workflow(model: Model, input: str, output: str) -> None:
    from ..compiler import CompileError, CompileOptions, compile_batch_scoring

    try:
        workflow = compile_batch_scoring(model, input, output, CompileOptions())
    except CompileError as error:
        raise ScoreCommandError(str(error)) from None
    sys.stdout.write(yaml.safe_dump(workflow, sort_keys=False))
