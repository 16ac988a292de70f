"""`aiml024 keys`: create, list and register signing keys; pick the key an approval is signed with."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aiml024 import signing
from aiml024.cli.keys import app
from aiml024.signing import SigningError
from aiml024.signing import sign_approval as sign_approval_cli

SHA = "c" * 64
runner = CliRunner()


@pytest.fixture
def keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "keys"
    monkeypatch.setenv("AIML024_KEYS_DIR", str(directory))
    monkeypatch.setenv("AIML024_USER", "bob")
    return directory


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_create_makes_a_private_key_and_prints_the_registry_entry(keys_dir: Path) -> None:
    result = runner.invoke(app, ["create", "--user", "alice", "--group", "risk", "-g", "credit"])
    assert result.exit_code == 0, result.output
    [key_file] = list(keys_dir.glob("*.pem"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    kid = signing.key_id(signing.load_private_key(key_file))
    assert f"created key {kid} in {key_file}" in result.stderr
    assert "aiml024-system/aiml024-approvers" in result.stderr
    [entry] = yaml.safe_load(result.stdout)
    assert entry["keyId"] == kid and entry["user"] == "alice"
    assert entry["groups"] == ["risk", "credit"]
    # The printed entry is valid registry content as it stands.
    registry = signing.parse_registry(yaml.safe_dump({"approvers": [entry]}))
    assert registry.get(kid) is not None


def test_create_defaults_to_the_current_user_and_takes_an_expiry(keys_dir: Path) -> None:
    result = runner.invoke(app, ["create", "--expires", "2030-06-01"])
    assert result.exit_code == 0, result.output
    [entry] = yaml.safe_load(result.stdout)
    assert entry["user"] == "bob" and entry["expires"] == "2030-06-01T00:00:00Z"


def test_list_shows_the_local_keys(keys_dir: Path) -> None:
    empty = runner.invoke(app, ["list"])
    assert empty.exit_code == 0 and "No keys" in empty.stderr
    first, first_path = signing.create_key(keys_dir)
    second, second_path = signing.create_key(keys_dir)
    (keys_dir / "broken.pem").write_text("nope")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ID", "FILE"]
    for key, path in ((first, first_path), (second, second_path)):
        assert any(line.split()[:2] == [signing.key_id(key), str(path)] for line in lines)
    assert any("broken.pem" in line and "not a PEM private key" in line for line in lines)


def test_create_register_adds_entries_to_a_registry_file(keys_dir: Path, tmp_path: Path) -> None:
    registry = tmp_path / "policy" / "approvers.yaml"
    for user in ("alice", "carol"):
        result = runner.invoke(
            app, ["create", "-u", user, "-g", "risk", "--register", str(registry)]
        )
        assert result.exit_code == 0, result.output
        assert f"({user}) to {registry}" in result.stderr
    loaded = signing.load_registry(registry)
    assert [e.user for e in loaded.approvers] == ["alice", "carol"]
    assert {e.key_id for e in loaded.approvers} == {k.key_id for k in signing.local_keys()}


def test_register_twice_refuses_the_duplicate(keys_dir: Path, tmp_path: Path) -> None:
    registry = tmp_path / "approvers.yaml"
    key, _ = signing.create_key(keys_dir)
    first = runner.invoke(app, ["register", str(registry), "-u", "alice"])
    assert first.exit_code == 0, first.output
    before = registry.read_text()
    again = runner.invoke(app, ["register", str(registry), "-u", "alice"])
    assert again.exit_code == 1
    line = one_error_line(again.stderr)
    assert f"already lists keyId {signing.key_id(key)}" in line
    assert registry.read_text() == before


def test_create_register_refuses_an_invalid_registry_before_making_a_key(
    keys_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "approvers.yaml"
    registry.write_text("approvers: [{keyId: x}]\n")
    result = runner.invoke(app, ["create", "--register", str(registry)])
    assert result.exit_code == 1
    assert f"approvers registry {registry}: approvers[0]" in one_error_line(result.stderr)
    assert not keys_dir.exists() or list(keys_dir.glob("*.pem")) == []
    assert registry.read_text() == "approvers: [{keyId: x}]\n"


def test_register_needs_a_key(keys_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["register", str(tmp_path / "approvers.yaml")])
    assert result.exit_code == 1
    assert "no signing key" in one_error_line(result.stderr)


def test_sign_approval_cli_picks_the_key(keys_dir: Path, tmp_path: Path) -> None:
    def sign(key: str | None) -> signing.SignedApproval:
        return sign_approval_cli("churn-v3", "default", SHA, "production", "ok", key)

    with pytest.raises(SigningError, match="no signing key in .*aiml024 keys create"):
        sign(None)
    alice_key, alice_path = signing.create_key(keys_dir)
    signed = sign(None)
    assert signed.key_id == signing.key_id(alice_key)
    assert signed.at.tzinfo is not None and signed.at.microsecond == 0

    registry = signing.ApproverRegistry(approvers=[signing.entry_for(alice_key, "alice")])
    approval, problem = signing.verify(
        signed, registry, "churn-v3", "default", SHA, datetime.now(UTC)
    )
    assert problem is None and approval is not None and approval.user == "alice"

    other, other_path = signing.create_key(keys_dir)
    with pytest.raises(SigningError, match="several keys .*--key"):
        sign(None)
    assert sign(signing.key_id(other)).key_id == signing.key_id(other)
    assert sign(str(alice_path)).key_id == signing.key_id(alice_key)
    with pytest.raises(SigningError, match="no key"):
        sign("ed25519:ffffffffffffffff")
    with pytest.raises(SigningError, match="cannot approve stage 'none'"):
        sign_approval_cli("churn-v3", "default", SHA, "none", "", str(other_path))
    with pytest.raises(SigningError, match="cannot sign this approval: sha256"):
        sign_approval_cli("churn-v3", "default", "abc", "production", "", str(other_path))
