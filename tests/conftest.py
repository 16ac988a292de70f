"""Shared fixtures: the repository layout and the upstream schemas beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# ../shared/schemas beside the checkout; AIML024_SCHEMAS overrides for other layouts.
SCHEMAS = Path(os.environ.get("AIML024_SCHEMAS", REPO.parent / "shared" / "schemas"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    if not SCHEMAS.is_dir():
        pytest.fail(f"upstream schemas not found at {SCHEMAS}; they come with ../shared/")
    return SCHEMAS
