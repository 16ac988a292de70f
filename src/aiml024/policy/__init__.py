"""The policy gates: Rego policies over a Model's evidence (promotion) and over what a
Deployment serves where (deployment), evaluated in-process from a pinned policy set."""

from __future__ import annotations

from .deployment import (
    DEPLOYMENT_QUERY,
    ENVIRONMENT_LABEL,
    deployment_input,
    evaluate_deployment,
)
from .engine import (
    PIN_FILE,
    PolicyBundle,
    PolicyEngine,
    PolicyError,
    PolicyPin,
    RegorusEngine,
    load_bundle,
    pin_mismatches,
    read_pin,
    write_pin,
)
from .gate import (
    RESULT_QUERY,
    GateResult,
    default_policy_dir,
    evaluate,
    policy_input,
    promotion_decision,
)

__all__ = [
    "DEPLOYMENT_QUERY",
    "ENVIRONMENT_LABEL",
    "PIN_FILE",
    "RESULT_QUERY",
    "GateResult",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyError",
    "PolicyPin",
    "RegorusEngine",
    "default_policy_dir",
    "deployment_input",
    "evaluate",
    "evaluate_deployment",
    "load_bundle",
    "pin_mismatches",
    "policy_input",
    "promotion_decision",
    "read_pin",
    "write_pin",
]
