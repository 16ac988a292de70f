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
    BREAK_GLASS_MIN_JUSTIFICATION,
    BREAKABLE_STAGES,
    RESULT_QUERY,
    GateResult,
    break_glass_problem,
    break_glass_records,
    counted_break_glass,
    default_policy_dir,
    evaluate,
    policy_input,
    promotion_decision,
)

__all__ = [
    "BREAKABLE_STAGES",
    "BREAK_GLASS_MIN_JUSTIFICATION",
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
    "break_glass_problem",
    "break_glass_records",
    "counted_break_glass",
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
