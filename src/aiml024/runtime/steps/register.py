"""The register step: copy the bundle and the model card into the artifact store and describe
the new model version as a Model manifest.

Layout under the run root (aiml024.api.steps.run_root: `{artifactStore}/{namespace}/
{experiment}/{experiment uid}/{workflow}`): `bundle/`, `card/` and `registration.json` (the
RegisterResult). The store is any fsspec location: a local path, file://, s3://, gs://,
memory://. Everything is written once: a path that already holds other content is never
replaced (a retried step that writes the same bytes succeeds). The copied bundle's digest is
recomputed from the store and must equal the one evaluate reported.

The control planes read `registration.json` from the store, never the step's result in the
Workflow's status (which namespace editors can write): the store path is the trust boundary.

The published card: `card/` holds evaluate's files with the run's `lineage` added to
model_card.json (dataset, spec hash, code version, experiment, workflow, trial, seed, model,
bundle digest), model_card.md and model_card.html rendered from it (aiml024.runtime.card), and
`signature.json`: an Ed25519 signature over a statement naming every card file's sha256, the
bundle's digest, the model and the run (runtime.card.CardStatement). The Model records the
signing key's fingerprint and the signature's URI (`status.cardSignature`).

The signing key is the PEM file named by `AIML024_CARD_KEY_FILE` (in a cluster: a Secret
mounted into the register step). Unset, and only off Kubernetes with a local artifact store,
it is `keys/model-card.pem` under the local state directory (`$AIML024_HOME`, else the
directory holding the artifact store: the local control plane's store is
`<state dir>/artifacts`), created on first use with mode 0600. Otherwise registration fails,
naming the variable: a model is never registered with an unsigned card.

Params: api.step_params.RegisterParams (every earlier step's result, typed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from aiml024 import signing
from aiml024.api import Model, describe_validation_error
from aiml024.api.common import EXPERIMENT_LABEL
from aiml024.api.experiment import LeaderboardEntry
from aiml024.api.model import (
    CardSignature,
    Evidence,
    Lineage,
    ModelSource,
    ModelSpec,
    ModelStatus,
)
from aiml024.api.step_params import RegisterParams
from aiml024.api.steps import REGISTRATION, LeaderboardRow, RegisterResult

from ..artifacts import EXPLANATIONS_FILE, REPORT_FILE, write_json, write_once
from ..bundle import bundle_digest
from ..card import (
    CARD_HTML,
    CARD_JSON,
    CARD_KEY_ENV,
    CARD_MARKDOWN,
    LOCAL_CARD_KEY,
    SIGNATURE_FILE,
    CardRun,
    CardStatement,
    SignedCard,
    file_digest,
    render_html,
    render_markdown,
    sign_card,
    signature_file_bytes,
)
from . import StepError, parse_params, run_root_from

MODEL_CARD = CARD_MARKDOWN


def run(params: Mapping[str, Any] | RegisterParams, inputs: Path, outputs: Path) -> dict[str, Any]:
    typed = parse_params(RegisterParams, params)
    base = run_root_from(typed)
    evaluated = typed.evaluate_result

    bundle_dir, card_dir = inputs / "bundle", inputs / "card"
    for directory in (bundle_dir, card_dir):
        if not directory.is_dir():
            raise StepError(f"input artifact {directory} is missing: run the evaluate step first")
    local = bundle_digest(bundle_dir)
    if local != evaluated.sha256:
        raise StepError(
            f"bundle digest {local} does not match the evaluate step's sha256 "
            f"{evaluated.sha256}: the bundle changed after evaluation"
        )
    key = card_signing_key(typed.artifact_store)  # before anything is written

    bundle_uri, card_uri = f"{base}/bundle", f"{base}/card"
    try:
        model = model_manifest(typed, bundle_uri, f"{card_uri}/{MODEL_CARD}")
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise StepError(f"cannot build the Model: {problems}") from None
    assert model.status is not None
    with tempfile.TemporaryDirectory(prefix="card-") as staging:
        published = Path(staging) / "card"
        signed = publish_card(typed, model, card_dir, published, key)
        copied = upload(bundle_dir, bundle_uri)
        if copied != local:
            raise RuntimeError(
                f"bundle copied to {bundle_uri} has digest {copied}, expected {local}"
            )
        upload(published, card_uri)
    model.status.card_signature = CardSignature(
        key_fingerprint=signed.key_fingerprint, signature_uri=f"{card_uri}/{SIGNATURE_FILE}"
    )
    result = RegisterResult(
        model=model.wire(), artifact_uri=bundle_uri, model_card_uri=f"{card_uri}/{MODEL_CARD}"
    ).wire()
    write_once(f"{base}/{REGISTRATION}", json.dumps(result, sort_keys=True, indent=1).encode())
    return result


def publish_card(
    params: RegisterParams,
    model: Model,
    card_dir: Path,
    target: Path,
    key: Ed25519PrivateKey,
) -> SignedCard:
    """Write the card as published into `target`: evaluate's files, model_card.json with the
    run's lineage, model_card.md and model_card.html rendered from it, and signature.json over
    every file's sha256, the bundle's digest, the model and the run. Deterministic: the same
    inputs and key give the same bytes (a retried step re-uploads nothing new)."""
    shutil.copytree(card_dir, target)
    (target / SIGNATURE_FILE).unlink(missing_ok=True)  # only this step signs
    try:
        card = json.loads((target / CARD_JSON).read_text())
    except FileNotFoundError:
        raise StepError(f"input artifact {card_dir} has no {CARD_JSON}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise StepError(f"{card_dir / CARD_JSON} is not JSON: {error}") from None
    if not isinstance(card, dict):
        raise StepError(f"{card_dir / CARD_JSON} must be a JSON object")
    assert model.status is not None and model.status.lineage is not None
    card["lineage"] = {
        **model.status.lineage.wire(),
        "trial": model.spec.source.trial,
        "model": model.metadata.name,
        "sha256": model.status.sha256,
    }
    write_json(target / CARD_JSON, card)
    (target / CARD_MARKDOWN).write_text(render_markdown(card))
    (target / CARD_HTML).write_text(render_html(card))
    files = sorted(p for p in target.rglob("*") if p.is_file())
    statement = CardStatement(
        model=model.metadata.name,
        run=CardRun(
            namespace=params.namespace,
            experiment=params.experiment,
            experiment_uid=params.experiment_uid,
            workflow=params.workflow,
        ),
        bundle_sha256=params.evaluate_result.sha256,
        card={p.relative_to(target).as_posix(): file_digest(p.read_bytes()) for p in files},
    )
    signed = sign_card(statement, key)
    (target / SIGNATURE_FILE).write_bytes(signature_file_bytes(signed))
    return signed


def card_signing_key(artifact_store: str) -> Ed25519PrivateKey:
    """The key that signs model cards: `$AIML024_CARD_KEY_FILE`; unset, the local state
    directory's key (created on first use) when this runs on one machine; else StepError."""
    configured = os.environ.get(CARD_KEY_ENV, "").strip()
    if configured:
        try:
            return signing.load_private_key(Path(configured).expanduser())
        except signing.KeyFileError as error:
            raise StepError(f"cannot sign the model card ({CARD_KEY_ENV}): {error}") from None
    home, why_not = local_state_dir(artifact_store)
    if home is None:
        raise StepError(
            f"cannot sign the model card: {CARD_KEY_ENV} is not set and {why_not}; set it to "
            "an Ed25519 private key file (PEM; in a cluster, the Secret mounted into the "
            "register step). A model is never registered with an unsigned card"
        )
    return local_card_key(home.joinpath(*LOCAL_CARD_KEY))


def local_state_dir(artifact_store: str) -> tuple[Path | None, str]:
    """(the local state directory, "") on one machine, else (None, why there is none)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None, "this runs in a Kubernetes pod, where no local key is made"
    home = os.environ.get("AIML024_HOME")
    if home:
        return Path(home).expanduser().resolve(), ""
    fs, root = fsspec.core.url_to_fs(artifact_store or ".")
    if "file" not in fs.protocol and "local" not in fs.protocol:
        return None, f"the artifact store {artifact_store} is not on this machine"
    return Path(root).resolve().parent, ""


def local_card_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, made (mode 0600, its directory 0700) when there is none yet; a key
    that others may read is refused, as ssh does."""
    if not path.exists():
        try:
            signing.save_private_key(signing.generate_key(), path)
        except signing.KeyFileError as error:
            if not path.exists():  # else another step made it first: use that one
                raise StepError(f"cannot sign the model card: {error}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StepError(
            f"cannot sign the model card: key file {path} is readable by others "
            f"(mode {mode:04o}); chmod 600 it"
        )
    try:
        return signing.load_private_key(path)
    except signing.KeyFileError as error:
        raise StepError(f"cannot sign the model card: {error}") from None


def upload(directory: Path, uri: str) -> str:
    """Copy the files of `directory` to `uri`, which must not exist yet or already hold exactly
    these files; return the digest read back from the store (aiml024.runtime.bundle's)."""
    fs, root = fsspec.core.url_to_fs(uri)
    if fs.exists(root):
        present, wanted = remote_digest(fs, root), bundle_digest(directory)
        if present != wanted:
            raise StepError(
                f"{uri} already holds other content (digest {present}, this run's is {wanted}); "
                "a registered artifact is never replaced"
            )
        return present
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        target = f"{root}/{path.relative_to(directory).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(target, path.read_bytes())
    return remote_digest(fs, root)


def remote_digest(fs: fsspec.AbstractFileSystem, root: str) -> str:
    digest = hashlib.sha256()
    prefix = root.rstrip("/") + "/"
    for path in sorted(p.removeprefix(prefix) for p in fs.find(root)):
        digest.update(path.encode() + b"\0")
        digest.update(hashlib.sha256(fs.cat_file(prefix + path)).digest())
    return digest.hexdigest()


def model_manifest(params: RegisterParams, artifact_uri: str, card_uri: str) -> Model:
    """The Model manifest of this run's version, from the earlier steps' results."""
    spec, experiment, workflow = params.spec, params.experiment, params.workflow
    ingested, validated = params.ingest_result, params.validate_result
    evaluated, searched = params.evaluate_result, params.search_result
    target = spec.model
    labels = {**(target.labels if target else {}), EXPERIMENT_LABEL: experiment}
    canonical = json.dumps(spec.wire(), sort_keys=True, separators=(",", ":"))
    pii = validated.pii
    return Model(
        metadata={"name": target.name if target else f"{experiment}-model", "labels": labels},
        spec=ModelSpec(
            source=ModelSource(experiment=experiment, workflow=workflow, trial=evaluated.trial),
            task=spec.task,
            stage="staging",
            owner=labels.get("owner"),
        ),
        status=ModelStatus(
            artifact_uri=artifact_uri,
            sha256=evaluated.sha256,
            metrics=evaluated.metrics,
            baseline_metrics=evaluated.baseline_metrics,
            primary_metric=evaluated.primary_metric,
            evidence=Evidence(
                model_card_uri=card_uri,
                model_card_complete=evaluated.card_complete,
                pii_columns=sorted(pii),
                pii_action=(
                    validated.pii_action if pii or validated.pii_action == "unscanned" else None
                ),
                calibration=evaluated.calibration,
                fairness=evaluated.fairness,
                sensitive_attributes=evaluated.sensitive_attributes,
                # evaluate writes explanations.json beside the card it explains
                explanation_uri=f"{card_uri.rsplit('/', 1)[0]}/{EXPLANATIONS_FILE}",
                report_uri=f"{card_uri.rsplit('/', 1)[0]}/{REPORT_FILE}",
                serving=evaluated.serving,
            ),
            leaderboard=_leaderboard(searched.leaderboard),
            lineage=Lineage(
                dataset_uri=ingested.uri,
                dataset_fingerprint=ingested.fingerprint,
                spec_hash=hashlib.sha256(canonical.encode()).hexdigest(),
                code_version=params.code_version,
                experiment=experiment,
                workflow=workflow,
                seed=spec.search.seed,
            ),
        ),
    )


def _leaderboard(rows: list[LeaderboardRow], limit: int = 10) -> list[LeaderboardEntry]:
    return [row.entry() for row in rows[:limit]]
