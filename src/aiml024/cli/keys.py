"""`aiml024 keys`: the signing keys that approvals are made with.

A key is created on the approver's machine and never leaves it; its public half goes to the risk
team, who list it in the approvers registry (the ConfigMap aiml024-system/aiml024-approvers in a
cluster, a file locally).
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .. import signing
from ..api import describe_validation_error
from ..signing import SigningError

app = typer.Typer(
    name="keys",
    help="Signing keys for approvals: create one, list yours, register it with the approvers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

UserOpt = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Who the key belongs to (default: $AIML024_USER or you)."),
]
GroupOpt = Annotated[
    list[str] | None,
    typer.Option("--group", "-g", help="A group of the approver (repeat for several)."),
]
ExpiresOpt = Annotated[
    datetime | None,
    typer.Option(
        "--expires",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
        help="When the registry stops trusting the key (UTC).",
    ),
]
KeysDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys-dir",
        help=f"Where keys are kept (default: ${signing.KEYS_DIR_ENV} or ~/.config/aiml024/keys).",
    ),
]


def fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    errors.print(message, highlight=False, soft_wrap=True, markup=False)


def _user(user: str | None) -> str:
    name = (user or os.environ.get("AIML024_USER") or getpass.getuser()).strip()
    if not name:
        fail("--user must not be empty", 2)
    return name


def _expires(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _entry_help(kid: str) -> str:
    return (
        f"Send this entry to the risk team to list key {kid} in the approvers registry "
        f"(data key {signing.APPROVERS_KEY} of ConfigMap "
        f"{signing.APPROVERS_NAMESPACE}/{signing.APPROVERS_CONFIGMAP}; locally "
        f"${signing.APPROVERS_FILE_ENV} or <policy dir>/{signing.APPROVERS_KEY}):"
    )


@app.command()
def create(
    user: UserOpt = None,
    group: GroupOpt = None,
    register: Annotated[
        Path | None,
        typer.Option("--register", help="Also add the entry to this approvers registry file."),
    ] = None,
    expires: ExpiresOpt = None,
    keys_dir: KeysDirOpt = None,
) -> None:
    """Create a signing key; print its key id and the approvers registry entry to send."""
    name = _user(user)
    try:
        if register is not None and register.exists():
            signing.load_registry(register)  # an invalid file fails before any key is made
        key, path = signing.create_key(keys_dir)
        entry = signing.entry_for(key, name, group or [], _expires(expires))
    except (SigningError, ValueError) as error:
        fail(str(error))
        return
    _note(f"created key {entry.key_id} in {path}")
    if register is not None:
        try:
            signing.register(register, entry)
        except (SigningError, OSError) as error:
            fail(f"{error} (the key was created in {path})")
            return
        _note(f"added {entry.key_id} ({name}) to {register}")
    else:
        _note(_entry_help(entry.key_id))
    sys.stdout.write(signing.entry_yaml(entry))


@app.command("register")
def register_(
    registry: Annotated[Path, typer.Argument(help="The approvers registry file to add to.")],
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="A key id or key file (default: your key).")
    ] = None,
    user: UserOpt = None,
    group: GroupOpt = None,
    expires: ExpiresOpt = None,
    keys_dir: KeysDirOpt = None,
) -> None:
    """Add an existing key to an approvers registry file (refuses a key id already there)."""
    name = _user(user)
    try:
        private, _ = signing.find_key(key, keys_dir)
        entry = signing.entry_for(private, name, group or [], _expires(expires))
        signing.register(registry, entry)
    except (SigningError, ValueError, OSError) as error:
        fail(str(error))
        return
    _note(f"added {entry.key_id} ({name}) to {registry}")
    sys.stdout.write(signing.entry_yaml(entry))


@app.command("list")
def list_(keys_dir: KeysDirOpt = None) -> None:
    """List your signing keys: key id and file."""
    directory = keys_dir if keys_dir is not None else signing.default_keys_dir()
    found = signing.local_keys(directory)
    if not found:
        _note(f"No keys in {directory}; make one with: aiml024 keys create")
        return
    width = max(len("KEY ID"), *(len(k.key_id or "-") for k in found))
    typer.echo(f"{'KEY ID':<{width}}  FILE")
    for item in found:
        line = f"{item.key_id or '-':<{width}}  {item.path}"
        typer.echo(line if item.problem is None else f"{line}  ({item.problem})")


def _first_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(describe_validation_error(error))
    return str(error).splitlines()[0]
