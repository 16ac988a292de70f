"""The pinned policy set: every drift from the pin, and every error reading it, denies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.unit.test_policy_gate import POLICIES, approval, make_model
from typer.testing import CliRunner

from aiml024.cli.policy import app
from aiml024.policy import (
    PIN_FILE,
    GateResult,
    PolicyError,
    evaluate,
    load_bundle,
    read_pin,
    write_pin,
)
from aiml024.policy.engine import OPA_MANIFEST

STRICTER = (
    "package aiml024.promotion\n\n"
    "import rego.v1\n\n"
    'violations contains "house_rule: production models need a team label" if {\n'
    '\tstage == "production"\n'
    "\tnot model.labels.team\n"
    "}\n"
)
PIN_ERROR = "policy_error: policy set does not match its pin: "


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A pinned copy of the product's policies that a test may change."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def gate(policy_dir: Path, **kwargs: object) -> GateResult:
    return evaluate(make_model(), "production", policy_dir, [approval("bob")], **kwargs)  # type: ignore[arg-type]


def test_the_repository_policies_and_their_copy_are_pinned() -> None:
    for directory in (POLICIES, POLICIES.parent / "manifests" / "policies"):
        bundle = load_bundle(directory)
        assert read_pin(directory).bundle_digest == bundle.digest
        assert json.loads((directory / OPA_MANIFEST).read_text())["revision"] == bundle.digest


def test_a_pinned_stricter_module_applies_and_deleting_it_denies(policy_dir: Path) -> None:
    (policy_dir / "house.rego").write_text(STRICTER)
    assert gate(policy_dir).violations[0].startswith(PIN_ERROR + "house.rego was added")

    write_pin(policy_dir)
    stricter = gate(policy_dir)
    assert (stricter.decision, stricter.violations) == (
        "deny",
        ["house_rule: production models need a team label"],
    )

    (policy_dir / "house.rego").unlink()  # quietly dropping the stricter rule
    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations == [
        PIN_ERROR + "house.rego was deleted "
        f"(if the change is intended, run aiml024 policy pin --dir {policy_dir})"
    ]


def test_a_renamed_module_denies(policy_dir: Path) -> None:
    (policy_dir / "promotion.rego").rename(policy_dir / "rules.rego")
    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations[0].startswith(PIN_ERROR + "promotion.rego was renamed to rules.rego")


def test_a_changed_module_denies(policy_dir: Path) -> None:
    module = policy_dir / "deployment.rego"
    module.write_text(module.read_text() + "\n# harmless?\n")
    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations[0].startswith(PIN_ERROR + "deployment.rego changed (pinned ")


def test_changed_data_denies_until_repinned(policy_dir: Path) -> None:
    before = gate(policy_dir)
    assert before.decision == "allow"
    data = policy_dir / "data.json"
    data.write_text(data.read_text().replace('"auc": 0.70', '"auc": 0.50'))

    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations[0].startswith(PIN_ERROR + "data.json changed (pinned ")
    assert result.bundle_digest == ""

    write_pin(policy_dir)
    after = gate(policy_dir)
    assert (after.decision, after.violations) == ("allow", [])
    assert after.bundle_digest not in ("", before.bundle_digest)


def test_deleted_data_denies(policy_dir: Path) -> None:
    (policy_dir / "data.json").unlink()
    assert gate(policy_dir).violations[0].startswith(PIN_ERROR + "data.json was deleted")


def test_test_files_and_other_files_are_not_pinned(policy_dir: Path) -> None:
    (policy_dir / "extra_test.rego").write_text("package aiml024.promotion\n")
    (policy_dir / "NOTES.md").write_text("notes\n")
    assert gate(policy_dir).decision == "allow"


def test_no_pin_denies(policy_dir: Path) -> None:
    (policy_dir / PIN_FILE).unlink()
    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations == [
        f"policy_error: the policy set in {policy_dir} is not pinned (no {PIN_FILE}); "
        f"run aiml024 policy pin --dir {policy_dir}"
    ]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1}', '{"version": 2}'])
def test_malformed_pin_denies(policy_dir: Path, content: str) -> None:
    (policy_dir / PIN_FILE).write_text(content)
    result = gate(policy_dir)
    assert result.decision == "deny"
    assert result.violations[0].startswith(f"policy_error: {PIN_FILE} is ")


def test_a_pin_whose_digest_does_not_add_up_denies(policy_dir: Path) -> None:
    doc = json.loads((policy_dir / PIN_FILE).read_text())
    doc["bundleDigest"] = "sha256:" + "0" * 64
    (policy_dir / PIN_FILE).write_text(json.dumps(doc))
    assert gate(policy_dir).violations[0].startswith(PIN_ERROR + f"{PIN_FILE} records bundleDigest")


def test_a_stale_opa_manifest_denies(policy_dir: Path) -> None:
    (policy_dir / OPA_MANIFEST).write_text('{"revision": "sha256:old", "roots": ["aiml024"]}')
    result = gate(policy_dir)
    assert result.violations[0].startswith(PIN_ERROR + ".manifest revision sha256:old is not")


def test_unreadable_directory_denies(policy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_dir.chmod(0)
    try:
        if os.access(policy_dir, os.R_OK):  # root reads anyway: make the listing fail instead
            real = Path.iterdir

            def iterdir(self: Path):  # type: ignore[no-untyped-def]
                if self == policy_dir:
                    raise PermissionError(13, "Permission denied", str(self))
                return real(self)

            monkeypatch.setattr(Path, "iterdir", iterdir)
        result = gate(policy_dir)
    finally:
        policy_dir.chmod(0o755)
    assert result.decision == "deny"
    assert result.violations == [f"policy_error: cannot list {policy_dir}: Permission denied"]


def test_unreadable_module_denies(policy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = policy_dir / "promotion.rego"
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == module:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = gate(policy_dir)
    assert result.violations == [f"policy_error: cannot read {module}: Permission denied"]


def test_directory_that_cannot_be_inspected_denies(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def is_dir(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", is_dir)
    assert gate(policy_dir).violations == [
        f"policy_error: cannot read {policy_dir}: Permission denied"
    ]


def test_expected_digest(policy_dir: Path) -> None:
    digest = load_bundle(policy_dir).digest
    assert gate(policy_dir, expected_digest=digest).decision == "allow"
    other = "sha256:" + "1" * 64
    result = gate(policy_dir, expected_digest=other)
    assert result.decision == "deny"
    assert result.violations == [
        f"policy_error: the policy bundle in {policy_dir} is {digest}, not the expected {other} "
        "(AIML024_POLICY_DIGEST)"
    ]


def test_any_engine_failure_denies(policy_dir: Path) -> None:
    class Broken:
        def evaluate(self, *_: object) -> object:
            raise ValueError("boom")

    result = evaluate(make_model(), "production", policy_dir, [approval("bob")], Broken())
    assert result.decision == "deny"
    assert result.violations == ["policy_error: unexpected error: ValueError: boom"]
    assert result.bundle_digest.startswith("sha256:")


def test_write_pin_refuses_a_directory_without_policies(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policies"):
        write_pin(tmp_path)


# --- aiml024 policy pin / verify -------------------------------------------------------------


def test_cli_verify_and_pin(policy_dir: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "--dir", str(policy_dir)])
    assert ok.exit_code == 0, ok.output
    assert "matches its pin: bundle sha256:" in ok.output

    data = policy_dir / "data.json"
    data.write_text(data.read_text().replace('"max_ece": 0.05', '"max_ece": 0.04'))
    drifted = runner.invoke(app, ["verify", "--dir", str(policy_dir)])
    assert drifted.exit_code == 1
    assert "data.json changed" in drifted.output

    pinned = runner.invoke(app, ["pin", "--dir", str(policy_dir)])
    assert pinned.exit_code == 0, pinned.output
    digest = read_pin(policy_dir).bundle_digest
    assert f"bundle {digest}" in pinned.output
    assert "changed since the last pin: data.json changed" in pinned.output
    assert runner.invoke(app, ["verify", "-d", str(policy_dir), "--digest", digest]).exit_code == 0
    wrong = runner.invoke(app, ["verify", "-d", str(policy_dir), "--digest", "sha256:nope"])
    assert wrong.exit_code == 1 and "not the expected sha256:nope" in wrong.output


def test_cli_pin_is_deterministic(policy_dir: Path) -> None:
    before = {n: (policy_dir / n).read_text() for n in (PIN_FILE, OPA_MANIFEST)}
    assert CliRunner().invoke(app, ["pin", "--dir", str(policy_dir)]).exit_code == 0
    assert {n: (policy_dir / n).read_text() for n in (PIN_FILE, OPA_MANIFEST)} == before


def test_cli_pin_reports_an_empty_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pin", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no policies" in result.output


def test_cli_pin_refuses_a_policy_that_does_not_compile(policy_dir: Path) -> None:
    before = (policy_dir / PIN_FILE).read_text()
    (policy_dir / "broken.rego").write_text("package aiml024.promotion\n\nallow if {\n")
    result = CliRunner().invoke(app, ["pin", "--dir", str(policy_dir)])
    assert result.exit_code == 1
    assert "broken.rego:4:1: expecting expression" in result.output
    assert (policy_dir / PIN_FILE).read_text() == before
