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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import fsspec
from pydantic import ValidationError

from aiml024.api import Model, describe_validation_error
from aiml024.api.experiment import LeaderboardEntry
from aiml024.api.model import Evidence, Lineage, ModelSource, ModelSpec, ModelStatus
from aiml024.api.steps import REGISTRATION, LeaderboardRow, RegisterResult

from ..bundle import bundle_digest
from . import StepError, run_root_from, spec_from

MODEL_CARD = "model_card.md"


def run(params: dict[str, Any], inputs: Path, outputs: Path) -> dict[str, Any]:
    spec = spec_from(params)
    base = run_root_from(params)
    evaluate = _required(params, "evaluate")
    ingest = _required(params, "ingest")

    bundle_dir, card_dir = inputs / "bundle", inputs / "card"
    for directory in (bundle_dir, card_dir):
        if not directory.is_dir():
            raise StepError(f"input artifact {directory} is missing: run the evaluate step first")
    local = bundle_digest(bundle_dir)
    if local != evaluate.get("sha256"):
        raise StepError(
            f"bundle digest {local} does not match the evaluate step's sha256 "
            f"{evaluate.get('sha256')}: the bundle changed after evaluation"
        )

    bundle_uri, card_uri = f"{base}/bundle", f"{base}/card"
    copied = upload(bundle_dir, bundle_uri)
    upload(card_dir, card_uri)
    if copied != local:
        raise RuntimeError(f"bundle copied to {bundle_uri} has digest {copied}, expected {local}")

    try:
        model = model_manifest(
            params, spec, evaluate, ingest, bundle_uri, f"{card_uri}/{MODEL_CARD}"
        )
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


def write_once(uri: str, content: bytes) -> None:
    """Write `content` to `uri` unless it exists; existing different content is an error."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        if fs.cat_file(path) != content:
            raise StepError(f"{uri} already exists with other content; it is never replaced")
        return
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, content)


def remote_digest(fs: fsspec.AbstractFileSystem, root: str) -> str:
    digest = hashlib.sha256()
    prefix = root.rstrip("/") + "/"
    for path in sorted(p.removeprefix(prefix) for p in fs.find(root)):
        digest.update(path.encode() + b"\0")
        digest.update(hashlib.sha256(fs.cat_file(prefix + path)).digest())
    return digest.hexdigest()


def model_manifest(
    params: dict[str, Any],
    spec: Any,
    evaluate: dict[str, Any],
    ingest: dict[str, Any],
    artifact_uri: str,
    card_uri: str,
) -> Model:
    experiment, workflow = params.get("experiment", ""), params.get("workflow", "")
    validate = params.get("validate") or {}
    search = params.get("search") or {}
    target = spec.model
    labels = {**(target.labels if target else {}), "aiml024.io/experiment": experiment}
    fingerprint = ingest.get("fingerprint")
    if not fingerprint:
        raise StepError("the ingest result carries no dataset fingerprint: lineage needs it")
    canonical = json.dumps(spec.wire(), sort_keys=True, separators=(",", ":"))
    pii = validate.get("pii") or {}
    return Model(
        metadata={"name": target.name if target else f"{experiment}-model", "labels": labels},
        spec=ModelSpec(
            source=ModelSource(
                experiment=experiment, workflow=workflow, trial=evaluate.get("trial")
            ),
            task=spec.task,
            stage="staging",
            owner=labels.get("owner"),
        ),
        status=ModelStatus(
            artifact_uri=artifact_uri,
            sha256=evaluate["sha256"],
            metrics=evaluate.get("metrics", {}),
            baseline_metrics=evaluate.get("baselineMetrics", {}),
            primary_metric=evaluate.get("primaryMetric"),
            evidence=Evidence(
                model_card_uri=card_uri,
                model_card_complete=bool(evaluate.get("cardComplete")),
                pii_columns=sorted(pii),
                pii_action=validate.get("piiAction") if pii else None,
                calibration=evaluate.get("calibration", {}),
            ),
            leaderboard=_leaderboard(search.get("leaderboard") or []),
            lineage=Lineage(
                dataset_uri=ingest.get("uri") or spec.data.uri or "",
                dataset_fingerprint=fingerprint,
                spec_hash=hashlib.sha256(canonical.encode()).hexdigest(),
                code_version=params.get("codeVersion") or "",
                experiment=experiment,
                workflow=workflow,
                seed=spec.search.seed,
            ),
        ),
    )


def _leaderboard(rows: list[dict[str, Any]], limit: int = 10) -> list[LeaderboardEntry]:
    return [LeaderboardRow.model_validate(row).entry() for row in rows[:limit]]


def _required(params: dict[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key)
    if not isinstance(value, dict):
        raise StepError(f"params carry no '{key}' result: the workflow must pass it to register")
    return value
