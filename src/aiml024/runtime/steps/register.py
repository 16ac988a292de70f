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

Params: api.step_params.RegisterParams (every earlier step's result, typed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from aiml024.api import Model, describe_validation_error
from aiml024.api.common import EXPERIMENT_LABEL
from aiml024.api.experiment import LeaderboardEntry
from aiml024.api.model import Evidence, Lineage, ModelSource, ModelSpec, ModelStatus
from aiml024.api.step_params import RegisterParams
from aiml024.api.steps import REGISTRATION, LeaderboardRow, RegisterResult

from ..artifacts import write_once
from ..bundle import bundle_digest
from . import StepError, parse_params, run_root_from

MODEL_CARD = "model_card.md"


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

    bundle_uri, card_uri = f"{base}/bundle", f"{base}/card"
    copied = upload(bundle_dir, bundle_uri)
    upload(card_dir, card_uri)
    if copied != local:
        raise RuntimeError(f"bundle copied to {bundle_uri} has digest {copied}, expected {local}")

    try:
        model = model_manifest(typed, bundle_uri, f"{card_uri}/{MODEL_CARD}")
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise StepError(f"cannot build the Model: {problems}") from None
    result = RegisterResult(
        model=model.wire(), artifact_uri=bundle_uri, model_card_uri=f"{card_uri}/{MODEL_CARD}"
    ).wire()
    write_once(f"{base}/{REGISTRATION}", json.dumps(result, sort_keys=True, indent=1).encode())
    return result


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
