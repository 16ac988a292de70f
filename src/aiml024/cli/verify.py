"""`aiml024 verify model/NAME`: is the registered model exactly what its signed card says?

The register step signs a statement naming every file of the model's `card/` with its sha256,
the bundle's digest, the model and the run (aiml024.runtime.card). Verify reads the Model from
the local store and its files from the artifact store, and checks, each on its own line:

- key: the key that signed is the one the Model records (status.cardSignature.keyFingerprint)
  and, with `--public-key FILE`, the one given;
- signature: the Ed25519 signature of the statement verifies with that key;
- card: each card file's sha256, recomputed, is the signed one, and no file is unsigned;
- bundle: the bundle's digest, recomputed from its files, is status.sha256 and the signed one;
- identity: the statement names this Model, its run and its card.

Exit 0 when every check passes; otherwise 1, naming what does not match.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import fsspec
import typer
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .. import signing
from ..api import Model, SpecError, describe_validation_error, kind_for
from ..api.common import DEFAULT_NAMESPACE
from ..compiler.options import child_name
from ..local.store import InvalidName, NotFound, Store, state_home
from ..runtime.card import (
    CARD_FILES,
    CARD_KEY_ENV,
    CARD_MARKDOWN,
    LOCAL_CARD_KEY,
    SIGNATURE_FILE,
    SignedCard,
    file_digest,
    key_fingerprint,
    signature_valid,
)

errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400)


class VerifyError(Exception):
    """Verification cannot start (no such Model, no signature recorded, an unusable key)."""


@dataclass(frozen=True)
class Check:
    name: str  # what was checked: key, signature, card <file>, bundle, identity
    ok: bool
    detail: str


def verify(
    ref: Annotated[str, typer.Argument(help="model/NAME")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Trust only this key (a PEM public or private key, or the base64 raw key); "
            "by default the key whose fingerprint the Model records.",
        ),
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = DEFAULT_NAMESPACE,
) -> None:
    """Check a Model's signed card: the signature, each card file and the bundle's digest."""
    try:
        name = model_name(ref)
        model = load_model(Store(state_home()), name, namespace)
        given = load_public_key(public_key) if public_key is not None else None
        checks = verify_model(model, given, local_key_files())
    except VerifyError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo(f"model/{name}: the signed model card")
    for check in checks:
        typer.echo(f"  {'ok' if check.ok else 'FAILED':<7} {check.name:<26} {check.detail}")
    failed = [check.name for check in checks if not check.ok]
    if failed:
        errors.print(
            f"[bold red]error:[/] model/{name} does not verify: tampered or wrong key: "
            + escape(", ".join(dict.fromkeys(failed))),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    typer.echo(f"model/{name}: verified")


# --- reading -----------------------------------------------------------------------------------


def model_name(ref: str) -> str:
    kind, _, name = ref.partition("/")
    try:
        if kind_for(kind) != "Model" or not name:
            raise VerifyError(f"expected model/NAME, not {ref!r}")
    except SpecError:
        raise VerifyError(f"expected model/NAME, not {ref!r}") from None
    return name


def load_model(store: Store, name: str, namespace: str) -> Model:
    try:
        return Model.model_validate(store.get("Model", name, namespace))
    except (NotFound, InvalidName) as error:
        raise VerifyError(str(error)) from None
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise VerifyError(f"model/{name} in the store is not a valid Model: {problems}") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM public key, a PEM or OpenSSH private key (its public
    half), an OpenSSH public key line, or the base64 raw key of the approvers registry."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as error:
        raise VerifyError(f"cannot read --public-key {path}: {error.strerror or error}") from None
    try:
        if b"PRIVATE KEY-----" in data:
            return signing.load_private_key(path.expanduser()).public_key()
        if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
            key: Any = serialization.load_pem_public_key(data)
        elif data.lstrip().startswith(b"ssh-ed25519 "):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = signing.decode_public_key(data.decode("ascii"))
    except signing.KeyFileError as error:
        raise VerifyError(f"--public-key: {error}") from None
    except (ValueError, UnicodeDecodeError, UnsupportedAlgorithm):
        raise VerifyError(f"--public-key {path} is not an Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerifyError(f"--public-key {path} is not an Ed25519 key")
    return key


def local_key_files() -> list[Path]:
    """Private keys on this machine that may have signed: $AIML024_CARD_KEY_FILE and the local
    state directory's (used only when their fingerprint is the one the Model records)."""
    configured = os.environ.get(CARD_KEY_ENV, "").strip()
    found = [Path(configured).expanduser()] if configured else []
    return [*found, state_home().joinpath(*LOCAL_CARD_KEY)]


def _read(uri: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri)
    return bytes(fs.cat_file(path))


def _short(digest: str | None) -> str:
    return f"{digest[:16]}…" if digest else "(none)"


# --- the checks --------------------------------------------------------------------------------


def verify_model(
    model: Model, given: Ed25519PublicKey | None = None, local_keys: list[Path] | None = None
) -> list[Check]:
    """Every check on `model`'s signed card, in order. `given`: the only key to trust."""
    status = model.status
    name = model.metadata.name
    recorded = status.card_signature if status else None
    if status is None or recorded is None:
        raise VerifyError(
            f"model/{name} has no card signature (status.cardSignature): it was registered "
            "before model cards were signed, or not by an experiment run"
        )
    checks: list[Check] = []
    try:
        signed: SignedCard | None = SignedCard.model_validate_json(_read(recorded.signature_uri))
    except ValidationError as error:
        why = "; ".join(describe_validation_error(error))
        checks.append(Check("signature", False, f"{recorded.signature_uri} is not valid: {why}"))
        signed = None
    except (OSError, ValueError) as error:
        checks.append(Check("signature", False, f"cannot read {recorded.signature_uri}: {error}"))
        signed = None
    if signed is not None:
        trusted = _key_check(checks, signed, recorded.key_fingerprint, given, local_keys or [])
        _signature_check(checks, signed, trusted)
        _card_checks(checks, signed, recorded.signature_uri)
    _bundle_check(checks, model, signed)
    if signed is not None:
        _identity_check(checks, model, signed, recorded.signature_uri)
    return checks


def _key_check(
    checks: list[Check],
    signed: SignedCard,
    recorded: str,
    given: Ed25519PublicKey | None,
    local_keys: list[Path],
) -> Ed25519PublicKey | None:
    """Append the key check; return the public key to verify the signature with, if any."""
    claimed = signed.key_fingerprint
    try:
        embedded: Ed25519PublicKey | None = signed.public()
    except ValueError:
        embedded = None
    problems: list[str] = []
    if given is not None:
        fingerprint = key_fingerprint(given)
        if claimed != fingerprint:
            problems.append(
                f"the card was signed by key {_short(claimed)}, not the given key "
                f"{_short(fingerprint)}"
            )
        if recorded != fingerprint:
            problems.append(
                f"the Model records key {_short(recorded)}, not the given key {_short(fingerprint)}"
            )
        trusted: Ed25519PublicKey | None = given
        source = "the given key"
    else:
        if claimed != recorded:
            problems.append(
                f"the card was signed by key {_short(claimed)}, not the key the Model records "
                f"({_short(recorded)}): re-signed with another key"
            )
        trusted, source = _recorded_key(recorded, embedded, local_keys)
    if embedded is None or key_fingerprint(embedded) != claimed:
        problems.append("signature.json's public key does not have its stated fingerprint")
    if problems:
        checks.append(Check("key", False, "; ".join(problems)))
    else:
        assert trusted is not None
        checks.append(Check("key", True, f"{signing.key_id(trusted)} ({source})"))
    return trusted


def _recorded_key(
    recorded: str, embedded: Ed25519PublicKey | None, local_keys: list[Path]
) -> tuple[Ed25519PublicKey | None, str]:
    """The public key whose fingerprint the Model records, from signature.json or this
    machine's signing keys; (None, "") when neither has it."""
    if embedded is not None and key_fingerprint(embedded) == recorded:
        return embedded, "the key the Model records"
    for path in local_keys:
        try:
            public = signing.load_private_key(path).public_key()
        except signing.KeyFileError:
            continue
        if key_fingerprint(public) == recorded:
            return public, f"the key the Model records, {path}"
    return None, ""


def _signature_check(
    checks: list[Check], signed: SignedCard, trusted: Ed25519PublicKey | None
) -> None:
    if trusted is None:
        checks.append(
            Check(
                "signature",
                False,
                "no public key with the fingerprint the Model records: pass --public-key",
            )
        )
    elif signature_valid(signed, trusted):
        checks.append(Check("signature", True, "Ed25519 signature of the card statement"))
    else:
        checks.append(
            Check(
                "signature",
                False,
                f"does not verify with key {signing.key_id(trusted)}: the statement or the "
                "signature was altered, or another key signed it",
            )
        )


def _card_checks(checks: list[Check], signed: SignedCard, signature_uri: str) -> None:
    card_uri = signature_uri.rsplit("/", 1)[0]
    fs, root = fsspec.core.url_to_fs(card_uri)
    prefix = root.rstrip("/") + "/"
    try:
        present = {p.removeprefix(prefix): p for p in fs.find(root)}
    except OSError as error:
        checks.append(Check("card", False, f"cannot list {card_uri}: {error}"))
        return
    present.pop(SIGNATURE_FILE, None)
    wanted = signed.statement.card
    for required in CARD_FILES:
        if required not in wanted:
            checks.append(Check(f"card {required}", False, "not covered by the signature"))
    for name in sorted(set(wanted) | set(present)):
        label = f"card {name}"
        if name not in present:
            checks.append(Check(label, False, f"signed, but missing from {card_uri}"))
        elif name not in wanted:
            checks.append(Check(label, False, "in the card directory but not signed: added"))
        else:
            actual = file_digest(fs.cat_file(present[name]))
            if actual == wanted[name]:
                checks.append(Check(label, True, f"sha256 {_short(actual)}"))
            else:
                checks.append(
                    Check(
                        label,
                        False,
                        f"sha256 {_short(actual)}, signed {_short(wanted[name])}: "
                        "changed after signing",
                    )
                )


def _bundle_check(checks: list[Check], model: Model, signed: SignedCard | None) -> None:
    from ..runtime.steps.register import remote_digest  # the register step's own digest

    status = model.status
    assert status is not None
    if not status.artifact_uri or not status.sha256:
        checks.append(Check("bundle", False, "the Model records no artifact or digest"))
        return
    try:
        fs, root = fsspec.core.url_to_fs(status.artifact_uri)
        actual = remote_digest(fs, root) if fs.exists(root) else None
    except OSError as error:
        checks.append(Check("bundle", False, f"cannot read {status.artifact_uri}: {error}"))
        return
    problems = []
    if actual is None:
        problems.append(f"{status.artifact_uri} does not exist")
    elif actual != status.sha256:
        problems.append(
            f"files recomputed to {_short(actual)}, the Model records {_short(status.sha256)}: "
            "changed after registration"
        )
    if signed is not None and signed.statement.bundle_sha256 != status.sha256:
        problems.append(
            f"the card was signed for bundle {_short(signed.statement.bundle_sha256)}, the "
            f"Model records {_short(status.sha256)}"
        )
    if problems:
        checks.append(Check("bundle", False, "; ".join(problems)))
    else:
        checks.append(Check("bundle", True, f"sha256 {_short(actual)} ({status.artifact_uri})"))


def _identity_check(
    checks: list[Check], model: Model, signed: SignedCard, signature_uri: str
) -> None:
    """The statement names this Model (`<name>` as the run registered it, or its version
    `<name>-v<generation>`), this run, and the card the Model's evidence points to."""
    statement, meta, source = signed.statement, model.metadata, model.spec.source
    run = statement.run
    generation = re.search(r"-g(\d+)$", run.workflow)
    names = {statement.model}
    if generation:
        names.add(child_name(statement.model, f"-v{generation.group(1)}"))
    problems = []
    if meta.name not in names:
        problems.append(f"signed for model {statement.model}, not {meta.name}")
    namespace = meta.namespace or DEFAULT_NAMESPACE
    wanted_run = (namespace, source.experiment, source.workflow)
    if (run.namespace, run.experiment, run.workflow) != wanted_run:
        problems.append(
            f"signed for run {run.namespace}/{run.experiment}/{run.workflow}, the Model comes "
            f"from {'/'.join(str(part) for part in wanted_run)}"
        )
    root = f"/{run.namespace}/{run.experiment}/{run.experiment_uid}/{run.workflow}/"
    artifact = (model.status.artifact_uri if model.status else None) or ""
    if not artifact.endswith(root + "bundle") or not signature_uri.endswith(
        root + f"card/{SIGNATURE_FILE}"
    ):
        problems.append(f"the Model's bundle or signature is not under the signed run ({root})")
    card_uri = model.status.evidence.model_card_uri if model.status else None
    if card_uri != signature_uri.rsplit("/", 1)[0] + f"/{CARD_MARKDOWN}":
        problems.append(f"the Model's card {card_uri} is not the signed one")
    if problems:
        checks.append(Check("identity", False, "; ".join(problems)))
    else:
        checks.append(
            Check(
                "identity",
                True,
                f"model {statement.model}, run {run.namespace}/{run.experiment}/"
                f"{run.experiment_uid}/{run.workflow}",
            )
        )
