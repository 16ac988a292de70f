"""Each example compiles to its checked-in golden manifest, byte for byte.

After an intended change: `python -m tests.golden.regenerate` (or run the tests once with
AIML024_UPDATE_GOLDEN=1), then review the diff. CI refuses to update goldens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.golden.regenerate import GOLDEN, example_files, golden_path, render
from tests.schema_validation import validate_upstream

UPDATE = os.environ.get("AIML024_UPDATE_GOLDEN") == "1"
EXAMPLES = example_files()


def test_there_are_examples() -> None:
    assert EXAMPLES, "no examples/*/*.yaml found"


def test_no_orphan_goldens() -> None:
    expected = {golden_path(e) for e in EXAMPLES}
    assert set(GOLDEN.glob("*/*.yaml")) <= expected


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.parent.name}/{e.name}" for e in EXAMPLES])
def test_example_matches_golden(example: Path) -> None:
    path = golden_path(example)
    text = render(example)
    if UPDATE:
        if os.environ.get("CI"):
            pytest.fail("AIML024_UPDATE_GOLDEN is not allowed in CI; regenerate locally")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run `python -m tests.golden.regenerate`"
    assert path.read_text() == text, (
        f"{example.name} compiles differently from {path}; if intended, run "
        "`python -m tests.golden.regenerate` and review the diff"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.parent.name}/{e.name}" for e in EXAMPLES])
def test_golden_validates_upstream(example: Path, schemas_dir: Path) -> None:
    for manifest in yaml.safe_load_all(render(example)):
        if manifest is not None:
            assert validate_upstream(manifest, schemas_dir) == [], manifest["kind"]
