"""`aiml024 policy`: run the Rego tests, evaluate the promotion policy for a Model, pin a
policy directory, and verify it against its pin.

Registered in the main CLI as a sub-app: `app.add_typer(policy.app, name="policy")`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..policy import (
    PIN_FILE,
    PolicyError,
    RegorusEngine,
    default_policy_dir,
    load_bundle,
    read_pin,
    write_pin,
)
from ..policy.engine import OPA_MANIFEST, RegoTestResult, pin_mismatches, run_rego_tests

if TYPE_CHECKING:
    from ..api.model import Approval, Model

app = typer.Typer(
    name="policy",
    help="Test the promotion and deployment policies, evaluate them for a Model, pin them, "
    "and check a directory against its pin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 400)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        help="The policy directory (default: $AIML024_POLICY_DIR, else policies/ in the checkout).",
        file_okay=False,
    ),
]


# `aiml024 policy eval`'s exit status per decision; 2 when nothing could be evaluated.
EXIT_CODES = {"allow": 0, "deny": 1, "require_approval": 3}
EXIT_CANNOT_EVALUATE = 2


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def pin(directory: DirOpt = None) -> None:
    """Record the sha256 of every module and of data.json, and the bundle digest.

    Writes policy-pin.json (checked by the gates on every evaluation) and OPA's .manifest
    (its revision is the bundle digest the operator expects OPA to serve). Refuses a policy
    set that does not compile.
    """
    policy_dir = directory or default_policy_dir()
    try:
        before = read_pin(policy_dir)
    except PolicyError:
        before = None
    try:
        RegorusEngine().load(load_bundle(policy_dir, verify_pin=False))
        pinned = write_pin(policy_dir)
    except PolicyError as error:
        _fail(str(error))
        return
    for name, digest in sorted(pinned.modules.items()):
        console.print(f"  {name:<28} {digest}", highlight=False)
    console.print(f"  {'data.json':<28} {pinned.data or '(none)'}", highlight=False)
    if before is not None:
        for change in pin_mismatches(before, pinned):
            console.print(f"  changed since the last pin: {change}", highlight=False)
    console.print(
        f"pinned {policy_dir} ({PIN_FILE}, {OPA_MANIFEST}): bundle {pinned.bundle_digest}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def verify(
    directory: DirOpt = None,
    digest: Annotated[
        str | None,
        typer.Option(help="Also require this bundle digest (as AIML024_POLICY_DIGEST does)."),
    ] = None,
) -> None:
    """Check a policy directory against its pin; exit 1 with the reason when it differs."""
    policy_dir = directory or default_policy_dir()
    try:
        bundle = load_bundle(policy_dir, expected_digest=digest)
    except PolicyError as error:
        _fail(str(error))
        return
    console.print(f"{policy_dir} matches its pin: bundle {bundle.digest}", highlight=False)


# --- aiml024 policy test ---------------------------------------------------------------------


@app.command("test")
def test_(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="The policy directory (default: $AIML024_POLICY_DIR, else policies/ in the "
            "checkout).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    dir_option: Annotated[
        Path | None,
        typer.Option("--dir", "-d", help="The policy directory, as an option.", file_okay=False),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run", "-r", help="Only the tests whose rule path matches this regular expression."
        ),
    ] = None,
) -> None:
    """Run the Rego unit tests (every test_* rule), like `opa test`.

    Loads the directory's modules, data.json and *_test.rego files. A test passes when its
    rule is true, fails when it is false or undefined, and is an error when evaluating it
    fails. Prints each test's outcome and a summary; exits 1 when any test fails or errs, a
    module does not compile, or there is no test to run. The pin is not required (test before
    you pin), but a directory that does not match it is reported.
    """
    if directory is not None and dir_option is not None and directory != dir_option:
        raise typer.BadParameter(f"two directories given: {directory} and --dir {dir_option}")
    policy_dir = directory or dir_option or default_policy_dir()
    try:
        results = run_rego_tests(policy_dir, match=run)
    except PolicyError as error:
        _fail(str(error))
        return
    if not results:
        where = f"matching --run {run!r} " if run is not None else ""
        _fail(f"no tests {where}in {policy_dir} (test_* rules in *_test.rego files)")
    for result in results:
        _print_test(result)
    console.print("-" * 80, highlight=False)
    for outcome in ("PASS", "FAIL", "ERROR"):
        count = sum(1 for r in results if r.outcome == outcome)
        if count:
            console.print(f"{outcome}: {count}/{len(results)}", highlight=False)
    try:
        load_bundle(policy_dir)
    except PolicyError as error:
        errors.print(
            "[bold yellow]warning:[/] the gates deny with this directory until it is pinned: "
            + escape(str(error)),
            highlight=False,
            soft_wrap=True,
        )
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _print_test(result: RegoTestResult) -> None:
    line = f"{result.rule}: {result.outcome}"
    if result.detail:
        line += f" ({result.detail})"
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not result.passed:
        for printed in result.prints:
            console.print(f"  {printed}", markup=False, highlight=False, soft_wrap=True)


# --- aiml024 policy eval ---------------------------------------------------------------------


@app.command("eval")
def eval_(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A Model in the local store (NAME or model/NAME); with --file, which Model of "
            "the file.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "--filename",
            "-f",
            help="A Model manifest with its status (YAML or JSON, e.g. kubectl get model NAME "
            "-o yaml) instead of the local store.",
            dir_okay=False,
        ),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option(help="The stage to evaluate (default: the Model's spec.stage)."),
    ] = None,
    approvals: Annotated[
        bool,
        typer.Option(
            "--approvals/--no-approvals",
            help="Count the Model's recorded and signed approvals as the control planes do "
            "(signed ones verified against $AIML024_APPROVERS_FILE, else approvers.yaml in the "
            "policy directory). Without it no approval counts.",
        ),
    ] = False,
    directory: DirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
    show_input: Annotated[
        bool,
        typer.Option(
            "--show-input",
            help="Print the policy's input document (JSON) instead of evaluating it, e.g. for "
            "opa eval --input.",
        ),
    ] = False,
) -> None:
    """Evaluate the promotion policy (data.aiml024.promotion.result) for a Model.

    Builds the same input document as the operator and the local control plane, from the
    Model's spec and status, and prints the decision and every violation. Changes nothing.

    Exit status: 0 allow, 1 deny (also when the policy set cannot be loaded or is not
    pinned), 3 require_approval, 2 when no Model could be read (or --show-input's document is
    not valid JSON); --show-input exits 0.
    """
    from ..policy import evaluate, policy_input
    from ..reconcile.model import with_source_artifact

    policy_dir = directory or default_policy_dir()
    model = with_source_artifact(_read_model(name, file))
    counted: list[Approval] = []
    ignored: list[str] = []
    if approvals:
        counted, ignored = _model_approvals(model, policy_dir)
    target = stage or model.spec.stage
    if show_input:
        try:
            shown = json.dumps(policy_input(model, target, counted), indent=2, allow_nan=False)
        except ValueError as error:
            _fail(f"the input document is not valid JSON: {error}", EXIT_CANNOT_EVALUATE)
        sys.stdout.write(shown + "\n")
        return
    result = evaluate(model, target, policy_dir, counted)
    if as_json:
        document: dict[str, Any] = {
            "model": model.metadata.name,
            "namespace": model.metadata.namespace or "default",
            "stage": result.stage,
            "decision": result.decision,
            "violations": result.violations,
            "bundleDigest": result.bundle_digest or None,
            "approvals": [a.model_dump(mode="json", by_alias=True) for a in counted],
            "approvalsIgnored": ignored,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        colour = {"allow": "green", "deny": "red"}.get(result.decision, "yellow")
        console.print(
            f"model {model.metadata.name} to {escape(result.stage)}: [bold {colour}]"
            f"{result.decision}[/] (policy {result.bundle_digest or 'not loaded'})",
            highlight=False,
            soft_wrap=True,
        )
        for violation in result.violations:
            console.print(f"  {violation}", markup=False, highlight=False, soft_wrap=True)
        if approvals:
            who = ", ".join(f"{a.user} ({a.stage})" for a in counted) or "none"
            console.print(
                f"approvals counted: {who}", markup=False, highlight=False, soft_wrap=True
            )
            for why in ignored:
                console.print(
                    f"approval not counted: {why}", markup=False, highlight=False, soft_wrap=True
                )
    raise typer.Exit(EXIT_CODES[result.decision])


def _read_model(name: str | None, file: Path | None) -> Model:
    """The Model to evaluate: from `file`, else `name` from the local store (read only)."""
    from pydantic import ValidationError

    from ..api import SpecError
    from ..api.model import Model
    from ..local.manifests import load_manifests
    from ..local.store import InvalidName, NotFound, Store, state_home

    if name is not None and "/" in name:
        kind, _, name = name.partition("/")
        if kind.lower() not in ("model", "models"):
            _fail(f"{kind}/{name} is not a Model: use NAME or model/NAME", EXIT_CANNOT_EVALUATE)
    if file is not None:
        try:
            found = [o for o in load_manifests(file) if isinstance(o, Model)]
        except SpecError as error:
            _fail(str(error), EXIT_CANNOT_EVALUATE)
        if name is not None:
            found = [m for m in found if m.metadata.name == name]
        if not found:
            _fail(f"{file}: no Model{f' named {name}' if name else ''}", EXIT_CANNOT_EVALUATE)
        if len(found) > 1:
            names = ", ".join(m.metadata.name for m in found)
            _fail(f"{file} holds several Models ({names}); name one", EXIT_CANNOT_EVALUATE)
        return found[0]
    if name is None:
        _fail("name a Model (aiml024 policy eval NAME) or give --file", EXIT_CANNOT_EVALUATE)
    home = state_home()
    if not home.is_dir():
        _fail(f'models "{name}" not found (no local store at {home})', EXIT_CANNOT_EVALUATE)
    try:
        return Model.model_validate(Store(home).get("Model", name))
    except (NotFound, InvalidName) as error:
        _fail(str(error), EXIT_CANNOT_EVALUATE)
    except ValidationError as error:
        _fail(f"the stored model {name} is not valid: {error}", EXIT_CANNOT_EVALUATE)


def _model_approvals(model: Model, policy_dir: Path) -> tuple[list[Approval], list[str]]:
    """The approvals that count, and why the others do not, as the local control plane
    counts them (reconcile.approvals.model_approvals with this machine's approvers registry)."""
    from ..reconcile.approvals import model_approvals
    from ..reconcile.clock import now
    from ..signing import SigningError, default_registry_path, load_registry

    path = default_registry_path(policy_dir)
    registry = None
    if path.exists():
        try:
            registry = load_registry(path)
        except SigningError as error:
            _fail(str(error), EXIT_CANNOT_EVALUATE)
    return model_approvals(model, registry, now())
