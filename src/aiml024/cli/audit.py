"""`aiml024 audit`: verify the audit log's hash chain, and print its entries.

Registered in the main CLI as a sub-app: `app.add_typer(audit.app, name="audit")`. The log
(aiml024.audit) is this machine's state directory by default; `--store` reads a cluster's,
in its artifact store (the operator's AIML024_AUDIT_STORE, else AIML024_ARTIFACT_STORE).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .. import audit
from ..local.store import state_home

app = typer.Typer(
    name="audit",
    help="The audit log of decisions (policy, approval, promotion, rollback, break-glass).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where the log is: a cluster's artifact store (e.g. s3://aiml024-artifacts, the "
        "operator's AIML024_AUDIT_STORE or AIML024_ARTIFACT_STORE). Default: this machine's "
        "state directory ($AIML024_HOME or ./.aiml024).",
    ),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="One namespace's log (default: every namespace)."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _logs(store: str | None, namespace: str | None) -> tuple[str, list[audit.AuditLog]]:
    root = store or state_home().as_uri()
    try:
        names = [namespace] if namespace else audit.namespaces(root)
        return root, [audit.AuditLog(root, name) for name in names]
    except (audit.AuditError, OSError, ValueError) as error:
        fail(f"cannot read the audit log at {root}: {error}", 2)


@app.command()
def verify(
    store: StoreOpt = None,
    namespace: NamespaceOpt = None,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            help="SEQ or SEQ:HASH of the newest entry as recorded elsewhere (the newest "
            "AuditRecorded event's message). Catches the newest entries deleted together "
            "with the head object. Needs --namespace.",
        ),
    ] = None,
) -> None:
    """Check the hash chain: exit 1 naming the first edited, reordered or missing entry.

    The head object (or --head) also catches the newest entries deleted. What only --head
    catches: a consistent rewrite by whoever can write the store (hashes recomputed, the head
    object with them), or a whole namespace's log deleted."""
    expected = None
    if head is not None:
        if namespace is None:
            fail("--head names one namespace's newest entry: give --namespace too", 2)
        try:
            expected = audit.parse_head(head)
        except ValueError as error:
            fail(str(error), 2)
    root, logs = _logs(store, namespace)
    # On this machine the events are a second record of each namespace's head.
    mirrored = _local_heads() if store is None else {}
    if not logs and not mirrored:
        typer.echo(f"no audit log under {root}/audit")
        return
    if namespace is None:
        logs += [
            audit.AuditLog(root, ns) for ns in sorted(set(mirrored) - {g.namespace for g in logs})
        ]
    failed = False
    for log in logs:
        seen: tuple[int, str | None] | None = mirrored.get(log.namespace)
        source = "the newest AuditRecorded event"
        if expected is not None:
            seen, source = expected, "the head given (--head)"
        try:
            objects = log.objects()
            problems = audit.verify(objects, log.head_bytes(), seen, source)
        except (OSError, ValueError) as error:
            fail(f"cannot read {log.uri}: {error}", 2)
        if problems:
            failed = True
            first, *rest = problems
            more = f" ({len(rest)} more problem(s) after it)" if rest else ""
            errors.print(
                f"[bold red]error:[/] {escape(f'{log.namespace}/{first}{more}')}",
                highlight=False,
                soft_wrap=True,
            )
            continue
        if not objects:
            typer.echo(f"{log.namespace}: no entries")
            continue
        tip = json.loads(objects[-1][1])
        typer.echo(
            f"{log.namespace}: {len(objects)} entries verified; the chain is intact up to "
            f"entry {tip['seq']} ({tip['hash']})"
        )
    if failed:
        raise typer.Exit(1)


def _local_heads() -> dict[str, tuple[int, str | None]]:
    """Each namespace's newest entry as its AuditRecorded events name it, from this machine's
    events (aiml024.local.store: events.jsonl in the state directory)."""
    path = state_home() / "events.jsonl"
    heads: dict[str, tuple[int, str | None]] = {}
    if not path.exists():
        return heads
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
            if event.get("reason") != audit.EVENT_REASON:
                continue
            namespace = event["involvedObject"]["namespace"]
            head = audit.head_from_event(str(event["message"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn or foreign line
        if head is not None and head[0] >= heads.get(namespace, (0, None))[0]:
            heads[namespace] = head
    return heads


@app.command("log")
def log_(
    store: StoreOpt = None,
    namespace: NamespaceOpt = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help=f"Only this kind ({', '.join(audit.KINDS)}).")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="The entries as a JSON array.")] = False,
) -> None:
    """Print the entries, oldest first (a warning on stderr when the chain does not verify)."""
    if kind is not None and kind not in audit.KINDS:
        fail(f"--kind must be one of {', '.join(audit.KINDS)}, not {kind!r}", 2)
    _root, logs = _logs(store, namespace)
    entries: list[dict[str, Any]] = []
    for log in logs:
        try:
            objects = log.objects()
            problems = audit.verify(objects, log.head_bytes())
            entries += audit.parse(objects)
        except (OSError, ValueError) as error:
            fail(f"cannot read {log.uri}: {error}", 2)
        if problems:
            errors.print(
                f"[yellow]warning:[/] {escape(f'{log.namespace}/{problems[0]}')}; the log does "
                "not verify (aiml024 audit verify)",
                highlight=False,
                soft_wrap=True,
            )
    if kind is not None:
        entries = [e for e in entries if e.get("kind") == kind]
    if json_:
        typer.echo(json.dumps(entries, indent=2, sort_keys=True, ensure_ascii=False))
        return
    if not entries:
        typer.echo("No audit entries found.")
        return
    rows = [("SEQ", "AT", "KIND", "ACTOR", "SUBJECT", "WHAT")] + [_row(e) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        typer.echo("  ".join([*cells, row[5]]))


def _row(entry: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    subject = entry.get("subject") or {}
    where = (
        f"{str(subject.get('kind', '?')).lower()}/{subject.get('namespace')}/{subject.get('name')}"
    )
    return (
        str(entry.get("seq")),
        str(entry.get("at")),
        str(entry.get("kind")),
        str(entry.get("actor")),
        where,
        audit.summary(entry),
    )
