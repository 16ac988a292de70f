"""Model + input + output -> the Argo Workflow (`argoproj.io/v1alpha1`) that scores a batch.

One container step runs `python -m aiml024.runtime.score --model-uri URI --sha256 HEX
--input URI --output URI` in the runtime image: it downloads the registered bundle, refuses it
unless its digest is the one the Model records, and writes the predictions as Parquet
(docs/CONTRACTS.md "Batch scoring"). `metadata.name`: `<model>-score-<8 hex>`, the hex from
the input and output URIs, so the same job is one object (a second `kubectl create` of it is
refused rather than run twice). Every value is a plain string: no `{{...}}` expression, and a value containing one
is refused (Argo would substitute it).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiml024.api import Model
from aiml024.api.common import DEFAULT_NAMESPACE
from aiml024.api.labels import MODEL_LABEL, SHA256_LABEL, short_digest

from .options import MANAGED_BY, CompileError, CompileOptions, canonical_json, child_name
from .workflow import (
    REMOTE_DATA_SCHEMES,
    TTL_AFTER_FAILURE_SECONDS,
    TTL_AFTER_SUCCESS_SECONDS,
    storage_problem,
)

ENTRYPOINT = "score"
# Object stores the runtime can write Parquet to (HTTPS reads only).
WRITABLE_SCHEMES = tuple(s for s in REMOTE_DATA_SCHEMES if s != "https")


def _registered(model: Model) -> tuple[str, str]:
    """(artifact URI, sha256) of the registered bundle, or a CompileError saying what lacks."""
    status = model.status
    if status is not None and status.artifact_uri and status.sha256:
        return status.artifact_uri, status.sha256
    source = model.spec.source
    if source.artifact_uri and source.sha256:
        return source.artifact_uri, source.sha256
    raise CompileError(
        f"model {model.metadata.name} has no registered artifact and digest yet "
        "(status.artifactUri, status.sha256): nothing to score with"
    )


def _uri_problem(what: str, uri: str, schemes: tuple[str, ...], options: CompileOptions,
                 namespace: str) -> str | None:  # fmt: skip
    """Why the step may not read or write `uri`, or None (workflow.storage_problem; and no
    Argo template syntax)."""
    if not uri:
        return f"{what}: empty"
    if "{{" in uri or "}}" in uri:
        return f"{what}: {uri!r} contains '{{{{' or '}}}}', which Argo would substitute"
    return storage_problem(what, uri, schemes, options, namespace)


def compile_batch_scoring(
    model: Model,
    input_uri: str,
    output_uri: str,
    options: CompileOptions | None = None,
    cpu: str = "2",
    memory: str = "4Gi",
) -> dict[str, Any]:
    """The Workflow that scores `input_uri` (Parquet or CSV) with the registered `model` into
    the Parquet file `output_uri`; the same input always gives the same document."""
    options = options or CompileOptions()
    artifact_uri, sha256 = _registered(model)
    name = model.metadata.name
    namespace = model.metadata.namespace or DEFAULT_NAMESPACE
    problems = [
        problem
        for what, uri, schemes in (
            ("input", input_uri, REMOTE_DATA_SCHEMES),
            ("output", output_uri, WRITABLE_SCHEMES),
        )
        if (problem := _uri_problem(what, uri, schemes, options, namespace))
    ]
    artifact = _uri_problem(f"model {name}'s artifact", artifact_uri, REMOTE_DATA_SCHEMES,
                            options, namespace)  # fmt: skip
    if artifact:
        problems.append(artifact)
    if not output_uri.lower().endswith((".parquet", ".pq")):
        problems.append(f"output: {output_uri!r}: the output is Parquet; name it .parquet or .pq")
    if problems:
        raise CompileError("; ".join(problems))

    labels = {MODEL_LABEL: name, SHA256_LABEL: short_digest(sha256), **MANAGED_BY}
    job = hashlib.sha256(canonical_json([input_uri, output_uri]).encode()).hexdigest()[:8]
    metadata: dict[str, Any] = {"name": child_name(name, f"-score-{job}")}
    if model.metadata.namespace:
        metadata["namespace"] = model.metadata.namespace
    metadata["labels"] = labels
    metadata["annotations"] = {SHA256_LABEL: sha256}

    container: dict[str, Any] = {"image": options.image}
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    container |= {
        "command": ["python", "-m", "aiml024.runtime.score"],
        "args": [
            "--model-uri",
            artifact_uri,
            "--sha256",
            sha256,
            "--input",
            input_uri,
            "--output",
            output_uri,
        ],  # fmt: skip
        # Memory limit = request (OOM is predictable); no CPU limit, so scoring is not throttled.
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": {
            "entrypoint": ENTRYPOINT,
            "serviceAccountName": options.batch_service_account,
            "podMetadata": {"labels": dict(labels)},
            "podGC": {"strategy": "OnPodSuccess"},
            "ttlStrategy": {
                "secondsAfterSuccess": TTL_AFTER_SUCCESS_SECONDS,
                "secondsAfterFailure": TTL_AFTER_FAILURE_SECONDS,
            },
            "templates": [{"name": ENTRYPOINT, "container": container}],
        },
    }
