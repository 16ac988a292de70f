"""The policy gates in a cluster: an OPA server when configured, else regorus in-process.

Either way the decision comes from aiml024.policy over the same pinned policy directory (its
digest is what status records; the OPA server loads the same ConfigMap as a bundle whose
revision is that digest). Fail closed: an unreachable server, a missing token, a bundle revision
other than the pinned digest (or AIML024_POLICY_DIGEST), an error or a timeout is a deny with a
`policy_error: ...` violation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..api import Model
from ..api.deployment import Deployment
from ..api.model import Approval
from ..policy import (
    GateResult,
    PolicyBundle,
    PolicyError,
    deployment_input,
    evaluate,
    evaluate_deployment,
)
from .config import OperatorConfig

BUNDLE_ROOT = "aiml024"


def _serves_our_root(manifest: dict[str, Any]) -> bool:
    """Whether a bundle's manifest roots cover data.aiml024 (no roots: OPA's default, all)."""
    roots = manifest.get("roots", [""])
    if not isinstance(roots, list):
        return False
    return any(
        root in ("", BUNDLE_ROOT) or (isinstance(root, str) and root.startswith(BUNDLE_ROOT + "/"))
        for root in roots
    )


class OpaEngine:
    """aiml024.policy.PolicyEngine over OPA's REST API (opa-python-client), with a token.

    Before every query it reads the bundle manifests OPA has activated (GET
    /v1/data/system/bundles) and refuses unless the bundle serving data.aiml024 has the
    revision `aiml024 policy pin` wrote: the digest of the local, pinned policy set. The query
    asks for provenance too, and its bundle revisions are checked again.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        token: str | None = None,
        token_file: Path | None = None,
        client: Any = None,
    ):
        self.url = url
        self.timeout = timeout
        self._token = token
        self._token_file = token_file
        self._client = client

    def token(self) -> str:
        """The bearer token: the file's content when a file is configured, else the value."""
        if self._token_file is not None:
            try:
                token = self._token_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise PolicyError(
                    f"cannot read the OPA token from {self._token_file}: {error.strerror}"
                ) from None
        else:
            token = (self._token or "").strip()
        if not token:
            raise PolicyError(
                "no token for the OPA server; set AIML024_OPA_TOKEN_FILE (a mounted Secret) "
                "or AIML024_OPA_TOKEN"
            )
        return token

    def client(self) -> Any:
        if self._client is None:
            from opa_client.opa import OpaClient  # type: ignore[import-untyped]  # operator image only

            parts = urlsplit(self.url)
            self._client = OpaClient(
                host=parts.hostname or "localhost",
                port=parts.port or (443 if parts.scheme == "https" else 8181),
                ssl=parts.scheme == "https",
                retries=0,
                timeout=self.timeout,
                token=self.token(),
            )
        return self._client

    def bundle_revisions(self) -> dict[str, Any]:
        """Bundle name -> revision, for the bundles OPA serves data.aiml024 from."""
        try:
            answer = self.client().get_data("system/bundles")
        except PolicyError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever OPA or the network did: deny
            raise PolicyError(
                f"OPA server: cannot read its bundles (GET /v1/data/system/bundles): {error}"
            ) from None
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise PolicyError(f"OPA server: /v1/data/system/bundles answered {answer!r}")
        return {
            name: entry["manifest"].get("revision")
            for name, entry in sorted(result.items())
            if isinstance(entry, dict)
            and isinstance(entry.get("manifest"), dict)
            and _serves_our_root(entry["manifest"])
        }

    def check_revision(self, expected: str) -> list[str]:
        """The names of the bundles serving data.aiml024; PolicyError unless all are `expected`."""
        revisions = self.bundle_revisions()
        if not revisions:
            raise PolicyError(
                f"OPA server serves no policy bundle with root {BUNDLE_ROOT} (its bundles have "
                "no .manifest, or OPA was not started with --bundle)"
            )
        for name, revision in revisions.items():
            if revision != expected:
                raise PolicyError(
                    f"OPA server serves policy bundle {name} at revision {revision}, not the "
                    f"pinned policy set {expected}"
                )
        return list(revisions)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close_connection"):
            client.close_connection()

    def evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        try:
            return self._evaluate(bundle, query, input_doc)
        finally:
            self.close()

    def _evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        names = self.check_revision(bundle.digest)
        package, _, rule = query.removeprefix("data.").rpartition(".")
        try:
            answer = self.client().query_rule(
                input_doc, package, rule, query_params={"provenance": "true"}
            )
        except PolicyError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever OPA or the network did: deny
            raise PolicyError(f"OPA server: {error}") from None
        if not isinstance(answer, dict):
            return None
        provenance = answer.get("provenance")
        bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
        if isinstance(bundles, dict):
            for name in names:
                entry = bundles.get(name)
                revision = entry.get("revision") if isinstance(entry, dict) else None
                if revision != bundle.digest:
                    raise PolicyError(
                        f"OPA server decided with policy bundle {name} at revision {revision}, "
                        f"not the pinned policy set {bundle.digest}"
                    )
        return answer.get("result")


def opa_engine(config: OperatorConfig) -> OpaEngine | None:
    """The OPA engine when AIML024_OPA_URL is set; None evaluates in-process."""
    if not config.opa_url:
        return None
    return OpaEngine(config.opa_url, config.policy_timeout, config.opa_token, config.opa_token_file)


async def _bounded(
    config: OperatorConfig, stage: str, run: Callable[[OpaEngine | None], GateResult]
) -> GateResult:
    """Run a gate off the event loop, bounded by config.policy_timeout; never raise."""
    try:
        call = asyncio.to_thread(run, opa_engine(config))
        return await asyncio.wait_for(call, config.policy_timeout + 1)
    except TimeoutError:
        return GateResult(
            "deny", [f"policy_error: no decision within {config.policy_timeout}s"], "", stage
        )
    except Exception as error:  # noqa: BLE001 - fail closed
        reason = f"{type(error).__name__}: {error}"
        return GateResult("deny", [f"policy_error: unexpected error: {reason}"], "", stage)


async def gate(
    config: OperatorConfig, model: Model, stage: str, approvals: list[Approval]
) -> GateResult:
    """The promotion gate for moving `model` to `stage`."""
    return await _bounded(
        config,
        stage,
        lambda engine: evaluate(
            model,
            stage,
            config.policy_dir,
            approvals,
            engine,
            expected_digest=config.expected_policy_digest,
        ),
    )


async def deployment_gate(
    config: OperatorConfig,
    dep: Deployment,
    models: list[tuple[str, Model]],
    namespace_labels: dict[str, str],
) -> GateResult:
    """The deployment gate: may these (role, Model) pairs serve `dep` in its namespace?

    `models` are the Models found for dep.spec.routes(); a route whose Model is missing is
    denied. GateResult.stage is dep.spec.requireStage.
    """
    return await _bounded(
        config,
        dep.spec.require_stage,
        lambda engine: evaluate_deployment(
            deployment_input(dep, models, namespace_labels),
            config.policy_dir,
            engine,
            expected_digest=config.expected_policy_digest,
        ),
    )
