"""Shared fixtures: the repository layout and the vendored upstream schemas (tests/upstream)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.schema_validation import SCHEMAS

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    if not SCHEMAS.is_dir():
        pytest.fail(
            f"upstream schemas not found at {SCHEMAS}: they are vendored in tests/upstream "
            "(AIML024_SCHEMAS, when set, must name a copy with the same layout)"
        )
    return SCHEMAS
