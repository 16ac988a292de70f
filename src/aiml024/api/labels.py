"""Label and annotation keys on what aiml024 creates to serve a Deployment, beside those in
aiml024.api.common (EXPERIMENT_LABEL, DEPLOYMENT_LABEL, GENERATION_LABEL, the identity
annotations). Each key is spelled here once; the compiler, the operator and the runtime
import it. The managed-by label is the compiler's (aiml024.compiler.options.MANAGED_BY): it
stamps it on every child, and the operator's watches select on what it stamps.
"""

from __future__ import annotations

from .common import GROUP

# On each Seldon predictor: which Model version it serves (labels select, annotations say all).
MODEL_LABEL = f"{GROUP}/model"
SHA256_LABEL = f"{GROUP}/sha256"  # labels: the short digest; the annotation: the full one
TASK_LABEL = f"{GROUP}/task"
# On each child the operator applies: the hash of the spec it compiled, so it updates a child
# only when what it compiles for it changed (Seldon's own defaulting is not fought).
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"

# A sha256 (64 hex digits) is longer than a label value may be (63): labels and the version a
# server reports carry a prefix; annotations and the container's environment the full digest.
SHORT_DIGEST = 12


def short_digest(sha256: str) -> str:
    """The digest prefix that labels and served versions carry."""
    return sha256[:SHORT_DIGEST]
