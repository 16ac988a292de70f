"""`aiml024 policy`: pin a policy directory, and verify it against its pin.

Registered in the main CLI as a sub-app: `app.add_typer(policy.app, name="policy")`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..policy import (
    PIN_FILE,
    PolicyError,
    RegorusEngine,
    default_policy_dir,
    load_bundle,
    read_pin,
    write_pin,
)
from ..policy.engine import OPA_MANIFEST, pin_mismatches

app = typer.Typer(
    name="policy",
    help="Pin the promotion and deployment policies, and check a directory against its pin.",
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


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


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
