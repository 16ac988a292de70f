"""The control planes' clock: the one `now()` that the operator and the local control plane
read, and pass to the decisions (which never read a clock themselves)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """UTC, to the second: what conditions, decisions and approvals record."""
    return datetime.now(UTC).replace(microsecond=0)
