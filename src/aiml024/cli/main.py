"""The `aiml024` command: kubectl-like verbs over the embedded control plane."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from .. import __version__
from ..api import SpecError, kind_for
from ..compiler import CompileError, compile_objects
from ..local.manifests import load_manifests
from ..local.store import NotFound, StoreBusy, state_home
from . import lineage, score, verify, views
from .audit import app as audit_app
from .controller import controller_app, monitor_app
from .keys import app as keys_app
from .policy import app as policy_app

app = typer.Typer(
    name="aiml024",
    help="AutoML as Kubernetes objects. Runs embedded on this machine; the same specs run in a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys", help="Your signing keys for approvals.")
app.add_typer(policy_app, name="policy", help="Test, evaluate, pin and verify the policy set.")
app.add_typer(audit_app, name="audit", help="Verify and print the audit log of decisions.")
app.add_typer(
    controller_app, name="controller", help="The background loop: rollouts, monitors, retraining."
)
app.add_typer(monitor_app, name="monitor", help="Run drift monitors now.")
# Like kubectl, never fold table rows when the output goes to a pipe or a file.
console = Console(width=None if sys.stdout.isatty() else 400)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)


class Output(StrEnum):
    table = "table"
    wide = "wide"
    yaml = "yaml"
    json = "json"


FileOpt = Annotated[
    Path, typer.Option("--filename", "-f", help="A manifest file or a directory of them.")
]


def fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _control_plane() -> Any:
    # Imported here so `aiml024 compile` and `--help` stay fast and need no ML libraries.
    from ..local.controlplane import LocalControlPlane

    return LocalControlPlane(state_home())


def _ref(ref: str, name: str | None) -> tuple[str, str | None]:
    """Accept `model/NAME`, `model NAME` or `models` (kubectl's forms)."""
    if "/" in ref:
        kind, _, ref_name = ref.partition("/")
        return kind_for(kind), ref_name
    return kind_for(ref), name


@app.command()
def apply(filename: FileOpt) -> None:
    """Create or update objects and run them until they settle: trained, gated, serving."""
    from ..local.controlplane import ApplyError
    from .progress import ApplyProgress

    try:
        objects = load_manifests(filename, resolve_paths=True)
        plane = _control_plane()
        with ApplyProgress(console) as progress:
            report = plane.apply(objects, progress.callbacks())
    except (SpecError, StoreBusy, ApplyError) as error:
        fail(str(error))
        return
    for name in report.models:
        views.print_model_summary(console, plane.store, name)
    for name, endpoint in report.deployments.items():
        views.print_serving(console, plane.store, name, endpoint)


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help="experiments, models or deployments (or kind/name)")],
    name: Annotated[str | None, typer.Argument()] = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """List objects, or show one, like `kubectl get`."""
    try:
        kind, name = _ref(kind, name)
        plane = _control_plane()
        objects = [plane.store.get(kind, name)] if name else plane.store.list(kind)
    except (SpecError, NotFound) as error:
        fail(str(error))
        return
    if output in (Output.yaml, Output.json):
        payload: Any = (
            objects[0] if name else {"apiVersion": "v1", "kind": "List", "items": objects}
        )
        if output == Output.json:
            console.print_json(json.dumps(payload))
        else:
            sys.stdout.write(yaml.safe_dump(payload, sort_keys=False))
        return
    if not objects:
        console.print(f"No {kind.lower()}s found.")
        return
    console.print(views.table(kind, objects, wide=output == Output.wide))


@app.command()
def describe(
    kind: Annotated[str, typer.Argument()],
    name: Annotated[str | None, typer.Argument()] = None,
) -> None:
    """Conditions, leaderboard, policy decision and recent events of one object."""
    try:
        kind, name = _ref(kind, name)
        if not name:
            fail("describe needs a name: aiml024 describe KIND NAME")
        plane = _control_plane()
        obj = plane.store.get(kind, name)
    except (SpecError, NotFound) as error:
        fail(str(error))
        return
    views.describe(console, obj, plane.store.events_for(kind, name or ""))


@app.command("compile")
def compile_(filename: FileOpt) -> None:
    """Print, as multi-document YAML, the manifests the operator creates in a cluster."""
    try:
        documents = compile_objects(load_manifests(filename))
    except (SpecError, CompileError) as error:
        fail(str(error))
        return
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))


@app.command()
def promote(
    ref: Annotated[str, typer.Argument(help="model/NAME")],
    stage: Annotated[
        str, typer.Option("--stage", help="staging, production or archived")
    ] = "production",
    break_glass: Annotated[
        str | None,
        typer.Option(
            "--break-glass",
            metavar="JUSTIFICATION",
            help="Push past the quality rules (metrics, fairness, calibration, card, PII) "
            "with this written justification (at least 20 characters); integrity rules still "
            "hold, the author may not, and it is recorded and audited.",
        ),
    ] = None,
) -> None:
    """Ask to move a Model to a stage; the policy decides, approvals may be needed."""
    from ..local.controlplane import ApplyError, current_user

    if stage not in ("staging", "production", "archived"):
        fail(f"--stage must be staging, production or archived, not {stage!r}", 2)
    try:
        kind, name = _ref(ref, None)
        if kind != "Model" or not name:
            fail("promote takes model/NAME")
        model = _control_plane().promote(name, stage, break_glass, current_user())
    except (SpecError, NotFound, StoreBusy, ApplyError) as error:
        fail(str(error))
        return
    views.print_decision(console, model)
    if model.status.policy.decision == "deny":
        raise typer.Exit(1)


@app.command()
def approve(
    ref: Annotated[str, typer.Argument(help="model/NAME")],
    stage: Annotated[str, typer.Option("--stage")] = "production",
    comment: Annotated[str, typer.Option("--comment", "-m")] = "",
    key: Annotated[
        str | None,
        typer.Option("--key", help="Sign with this key (id or file; see `aiml024 keys`)."),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            help="For a cluster: sign an approval of this artifact digest and print it as a "
            "Model patch (kubectl apply --server-side, or commit it for Argo CD).",
        ),
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
) -> None:
    """Approve a Model for a stage (you cannot approve your own model). With an approvers
    registry the approval is a statement signed with your key, verified against it."""
    from ..local.controlplane import ApplyError, current_user

    try:
        kind, name = _ref(ref, None)
        if kind != "Model" or not name:
            fail("approve takes model/NAME")
        assert name is not None
        if sha256 is not None:
            _print_signed_approval(name, namespace, sha256, stage, comment, key)
            return
        model = _control_plane().approve(name, stage, current_user(), comment, key)
    except (SpecError, NotFound, StoreBusy, ApplyError) as error:
        fail(str(error))
        return
    views.print_decision(console, model)


def _print_signed_approval(
    name: str, namespace: str, sha256: str, stage: str, comment: str, key: str | None
) -> None:
    from .. import signing

    try:
        signed = signing.sign_approval(name, namespace, sha256, stage, comment, key)
        patch = signing.approval_patch(name, namespace, signed, argocd=True)
    except signing.SigningError as error:
        fail(str(error))
        return
    typer.echo(yaml.safe_dump(patch, sort_keys=False), nl=False)
    errors.print(
        f"# apply with: {signing.kubectl_apply_command(signed)}", highlight=False, soft_wrap=True
    )


@app.command()
def delete(
    ref: Annotated[str | None, typer.Argument(help="KIND/NAME (or use -f)")] = None,
    filename: Annotated[Path | None, typer.Option("--filename", "-f")] = None,
) -> None:
    """Delete objects; deleting a Deployment stops its model server."""
    try:
        plane = _control_plane()
        if filename is not None:
            targets = [(o.kind, o.metadata.name) for o in load_manifests(filename)]
        elif ref:
            kind, name = _ref(ref, None)
            if not name:
                fail("delete takes KIND/NAME or -f PATH")
            targets = [(kind, name or "")]
        else:
            fail("delete takes KIND/NAME or -f PATH", 2)
            return
        for kind, name in targets:
            gone = plane.delete(kind, name)
            console.print(f"{kind.lower()}.aiml024.io/{name} {'deleted' if gone else 'not found'}")
    except (SpecError, StoreBusy) as error:
        fail(str(error))


@app.command()
def version() -> None:
    """Print the aiml024 version."""
    console.print(f"aiml024 {__version__}")


# Commands in their own modules.
app.command()(verify.verify)
app.command()(lineage.lineage)
app.command()(score.score)

if __name__ == "__main__":
    app()
