"""What every compile target shares: options, the error type and child naming."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

try:
    # Read once at import from the installed distribution, not per call: compiling stays pure.
    VERSION = metadata.version("aiml024")
except metadata.PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
    VERSION = "0.0.0"

MANAGED_BY = {"app.kubernetes.io/managed-by": "aiml024"}
# Characters that would break the JSON the workflow assembles by plain text substitution.
_UNSAFE_IN_JSON_STRING = re.compile(r'["\\\x00-\x1f]')


class CompileError(ValueError):
    """A valid object that cannot be compiled (for example a task the runtime cannot train)."""


@dataclass(frozen=True)
class CompileOptions:
    """Installation-level settings; everything else comes from the object being compiled."""

    image: str = f"ghcr.io/aiml024/runtime:{VERSION}"
    artifact_store: str = "s3://aiml024-artifacts"
    study_storage: str = ""
    code_version: str = VERSION
    service_account: str = "aiml024-runtime"
    # Batch scoring reads a bundle and writes the user's output: it needs no write access to
    # the run roots, and users may create its Workflows (the runtime guard keeps
    # aiml024-runtime for the operator's). Give it read access to the artifact store.
    batch_service_account: str = "aiml024-batch"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    # Model servers need CPU requests for the HorizontalPodAutoscaler's utilization target.
    serving_cpu: str = "1"
    serving_memory: str = "2Gi"
    # The Secret holding the model-card signing key (`key.pem`), mounted into the register
    # step; None: no mount (one machine, where the step keeps a key in the state directory).
    card_key_secret: str | None = None

    def __post_init__(self) -> None:
        for name in ("artifact_store", "study_storage", "code_version"):
            if _UNSAFE_IN_JSON_STRING.search(getattr(self, name)):
                raise CompileError(
                    f"options.{name}: quotes, backslashes and control characters are not "
                    "allowed (the value is embedded in a JSON string)"
                )


def child_name(parent: str, suffix: str, limit: int = 63) -> str:
    """`<parent><suffix>`, shortened with a stable hash when it would pass `limit` characters."""
    name = parent + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(parent.encode()).hexdigest()[:8]
    return f"{parent[: limit - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and for parameters: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
