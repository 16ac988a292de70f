"""The promotion gate: Rego policies over a Model's evidence, evaluated in-process."""

from __future__ import annotations

from .engine import PolicyBundle, PolicyEngine, PolicyError, RegorusEngine, load_bundle
from .gate import (
    RESULT_QUERY,
    GateResult,
    default_policy_dir,
    evaluate,
    policy_input,
    promotion_decision,
)

__all__ = [
    "RESULT_QUERY",
    "GateResult",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyError",
    "RegorusEngine",
    "default_policy_dir",
    "evaluate",
    "load_bundle",
    "policy_input",
    "promotion_decision",
]
