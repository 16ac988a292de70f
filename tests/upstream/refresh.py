"""Refresh the vendored upstream CRDs from a copy of the schemas, or check them.

    python tests/upstream/refresh.py [--from DIR] [--check] [FILE ...]

The table in README.md beside this script is the list of vendored files. Only files it names are
copied (naming any other is an error), byte for byte, from DIR (default: ../shared/schemas beside
the checkout); their bytes and sha256 cells are then rewritten. With --check nothing is copied or
rewritten: the exit status is 1 when a vendored file differs from its row. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "schemas"
# Files of this folder that are not vendored schemas.
OWN = {"README.md", "refresh.py", "LICENSE-2.0.txt", ".gitattributes"}


class Row(NamedTuple):
    line: str
    size: str
    sha256: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def rows(readme: Path = README) -> dict[str, Row]:
    """The table's rows by file: every line that starts with a backquoted path in a cell."""
    table = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = _cells(line)
            table[cells[0].strip("`")] = Row(line, cells[-2], cells[-1].strip("`"))
    return table


def digest(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return str(len(data)), hashlib.sha256(data).hexdigest()


def problems(folder: Path = HERE) -> list[str]:
    """Every difference between the files in `folder` and the table of its README.md."""
    table = rows(folder / "README.md")
    found = []
    for name, row in sorted(table.items()):
        path = folder / name
        if not path.is_file():
            found.append(f"{name}: listed but missing")
            continue
        size, sha256 = digest(path)
        if (size, sha256) != (row.size, row.sha256):
            found.append(f"{name}: {size} bytes, sha256 {sha256}; listed {row.size}, {row.sha256}")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in table and name not in OWN and "__pycache__" not in path.parts:
            found.append(f"{name}: not in the table")
    return found


def refresh(source: Path, names: list[str]) -> list[str]:
    """Copy `names` (all listed files when empty) from `source`; rewrite their table cells."""
    table = rows()
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"not in the table of {README}: {', '.join(unknown)}")
    text = README.read_text(encoding="utf-8")
    changed = []
    for name in names or sorted(table):
        origin = source / name
        if not origin.is_file():
            raise SystemExit(f"{origin}: no such file")
        (HERE / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, HERE / name)
        size, sha256 = digest(HERE / name)
        row = table[name]
        if (size, sha256) != (row.size, row.sha256):
            cells = [*_cells(row.line)[:-2], size, f"`{sha256}`"]
            text = text.replace(row.line, "| " + " | ".join(cells) + " |")
            changed.append(name)
    README.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--check", action="store_true", help="verify only; exit 1 on a difference")
    parser.add_argument("files", nargs="*", help="paths as listed in the table (default: all)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        print("\n".join(found) or "all vendored files match the table")
        return 1 if found else 0
    for name in refresh(args.source, args.files):
        print(f"{name}: changed; update its version / commit cell in {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
