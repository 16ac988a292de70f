"""The promotion gate in a cluster: an OPA server when configured, else regorus in-process.

Either way the decision comes from aiml024.policy.evaluate over the same policy directory
(its digest is what status records; the OPA server loads the same ConfigMap). Fail closed: an
unreachable server, an error or a timeout is a deny with a `policy_error: ...` violation.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from ..api import Model
from ..api.model import Approval
from ..policy import GateResult, PolicyBundle, PolicyError, evaluate
from .config import OperatorConfig


class OpaEngine:
    """aiml024.policy.PolicyEngine over OPA's data API (opa-python-client)."""

    def __init__(self, url: str, timeout: float):
        from opa_client.opa import OpaClient  # only the operator image carries it

        parts = urlsplit(url)
        self.client = OpaClient(
            host=parts.hostname or "localhost",
            port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https",
            retries=0,
            timeout=timeout,
        )

    def evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        package, _, rule = query.removeprefix("data.").rpartition(".")
        try:
            answer = self.client.query_rule(input_doc, package, rule)
        except Exception as error:  # noqa: BLE001 - whatever OPA or the network did: deny
            raise PolicyError(f"OPA server: {error}") from None
        return answer.get("result") if isinstance(answer, dict) else None


async def gate(
    config: OperatorConfig, model: Model, stage: str, approvals: list[Approval]
) -> GateResult:
    """Evaluate off the event loop, bounded by config.policy_timeout."""
    engine = OpaEngine(config.opa_url, config.policy_timeout) if config.opa_url else None
    call = asyncio.to_thread(evaluate, model, stage, config.policy_dir, approvals, engine)
    try:
        return await asyncio.wait_for(call, config.policy_timeout + 1)
    except TimeoutError:
        return GateResult(
            "deny", [f"policy_error: no decision within {config.policy_timeout}s"], "", stage
        )
