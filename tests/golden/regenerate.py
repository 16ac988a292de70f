"""Golden files: every example under examples/<name>/ compiled, as tests/golden/<name>/<file>.

    python -m tests.golden.regenerate   # rewrite them after an intended compiler change

Regenerate only on request and review the diff; CI never writes goldens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from aiml024.api import parse_object
from aiml024.compiler import compile_objects

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GOLDEN = Path(__file__).resolve().parent
HEADER = (
    "# Golden output of aiml024.compiler for {source}; "
    "regenerate: python -m tests.golden.regenerate\n"
)


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*/*.yaml"))


def golden_path(example: Path) -> Path:
    return GOLDEN / example.parent.name / example.name


def render(example: Path) -> str:
    """The compiled manifests of one example file, as a YAML stream with default options."""
    source = str(example.relative_to(REPO))
    objects = [
        parse_object(document, source)
        for document in yaml.safe_load_all(example.read_text())
        if document is not None
    ]
    manifests = compile_objects(objects)
    body = yaml.safe_dump_all(manifests, sort_keys=False, width=100) if manifests else ""
    return HEADER.format(source=source) + body


def regenerate() -> list[Path]:
    written = []
    for example in example_files():
        path = golden_path(example)
        text = render(example)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in regenerate():
        print(f"wrote {path.relative_to(REPO)}")
    sys.exit(0)
