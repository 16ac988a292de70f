"""The vendored upstream CRDs (tests/upstream) are the files its README lists, byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.schema_validation import UPSTREAM_CRDS
from tests.upstream import refresh

# Upstream CRDs that tests read by path rather than through UPSTREAM_CRDS.
READ_DIRECTLY = {"argo-cd/application-crd.yaml"}


def test_vendored_files_match_the_table() -> None:
    assert refresh.problems() == []


def test_every_upstream_crd_the_tests_read_is_vendored() -> None:
    from tests.integration.emulator.server import DEFAULT_CRDS
    from tests.schema_validation import SCHEMAS

    emulator = {
        p.relative_to(SCHEMAS).as_posix() for p in DEFAULT_CRDS if p.is_relative_to(SCHEMAS)
    }
    used = {name for names in UPSTREAM_CRDS.values() for name in names} | READ_DIRECTLY | emulator
    assert used - set(refresh.rows()) == set()


def test_a_changed_or_unlisted_file_is_reported(tmp_path: Path) -> None:
    name = "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml"
    row = refresh.rows()[name]
    (tmp_path / "README.md").write_text(f"{row.line}\n| `gone.yaml` | x | 1 | `0` |\n")
    (tmp_path / name).parent.mkdir(parents=True)
    shutil.copyfile(refresh.HERE / name, tmp_path / name)
    (tmp_path / "stray.yaml").write_text("kind: Stray\n")
    assert refresh.problems(tmp_path) == [
        "gone.yaml: listed but missing",
        "stray.yaml: not in the table",
    ]
    with open(tmp_path / name, "ab") as handle:
        handle.write(b"\n")
    assert any(p.startswith(f"{name}: 13111 bytes") for p in refresh.problems(tmp_path))
