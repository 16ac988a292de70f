"""Signed approvals: the statement, keys, the annotation form, the registry and verification."""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiml024 import signing
from aiml024.api.model import Approval
from aiml024.signing import (
    ApprovalStatement,
    ApproverRegistry,
    KeyFileError,
    RegistryError,
    SignedApproval,
    SigningError,
)

SHA = "a" * 64
OTHER_SHA = "b" * 64
AT = datetime(2025, 3, 1, 12, 30, 15, tzinfo=UTC)
NOW = AT + timedelta(hours=1)


def statement(**changes: Any) -> ApprovalStatement:
    fields: dict[str, Any] = dict(
        model="churn-v3",
        namespace="risk",
        sha256=SHA,
        stage="production",
        at=AT,
        comment="checked the fairness report",
    )
    return ApprovalStatement(**{**fields, **changes})


@pytest.fixture(scope="module")
def bob_key() -> Ed25519PrivateKey:
    return signing.generate_key()


@pytest.fixture(scope="module")
def registry(bob_key: Ed25519PrivateKey) -> ApproverRegistry:
    return ApproverRegistry(approvers=[signing.entry_for(bob_key, "bob", ["risk", "credit"])])


def check(signed: SignedApproval, registry: ApproverRegistry, **where: Any):
    target: dict[str, Any] = dict(model_name="churn-v3", namespace="risk", sha256=SHA, now=NOW)
    return signing.verify(signed, registry, **(target | where))


# --- the statement -----------------------------------------------------------------------------


def test_canonical_bytes_are_domain_separated_sorted_and_compact() -> None:
    data = statement().canonical_bytes()
    head, _, body = data.partition(b"\n")
    assert head == b"aiml024.io/approval/v1"
    assert body == (
        b'{"at":"2025-03-01T12:30:15Z","comment":"checked the fairness report",'
        b'"model":"churn-v3","namespace":"risk","sha256":"' + SHA.encode() + b'",'
        b'"stage":"production"}'
    )
    # Sub-second precision and time zones do not change what is signed.
    local = AT.astimezone(datetime.now().astimezone().tzinfo).replace(microsecond=999)
    assert statement(at=local).canonical_bytes() == data


def test_every_field_changes_the_signed_bytes() -> None:
    base = statement().canonical_bytes()
    changes = dict(
        model="churn-v4",
        namespace="default",
        sha256=OTHER_SHA,
        stage="staging",
        at=AT + timedelta(seconds=1),
        comment="",
    )
    for field, value in changes.items():
        assert statement(**{field: value}).canonical_bytes() != base, field


def test_a_statement_needs_an_aware_time_and_valid_fields() -> None:
    with pytest.raises(ValueError, match="timezone"):
        statement(at=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        statement(sha256="A" * 64)
    with pytest.raises(ValueError):
        statement(model="Not_A_Name")
    with pytest.raises(ValueError):
        statement(comment="x" * (signing.MAX_COMMENT + 1))


def test_statements_are_frozen() -> None:
    with pytest.raises(ValueError):
        statement().stage = "staging"  # type: ignore[misc]


# --- sign and verify ---------------------------------------------------------------------------


def test_sign_and_verify_round_trip(bob_key: Ed25519PrivateKey, registry: ApproverRegistry) -> None:
    signed = signing.sign(statement(), bob_key)
    assert signed.key_id == signing.key_id(bob_key)
    assert len(base64.b64decode(signed.signature)) == 64
    approval, problem = check(signed, registry)
    assert problem is None
    assert approval == Approval(
        user="bob",
        stage="production",
        at=AT,
        comment="checked the fairness report",
        groups=["risk", "credit"],
        key_id=signed.key_id,
        sha256=SHA,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "churn-v4"),
        ("namespace", "default"),
        ("sha256", OTHER_SHA),
        ("stage", "staging"),
        ("comment", "LGTM"),
        ("at", AT + timedelta(seconds=1)),
    ],
)
def test_tampering_with_any_field_breaks_verification(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry, field: str, value: Any
) -> None:
    signed = signing.sign(statement(), bob_key)
    forged = SignedApproval(**{**signed.model_dump(), field: value})
    # Checked against a Model that matches the forged fields: only the signature can object.
    where = {"model": "model_name", "namespace": "namespace", "sha256": "sha256"}
    approval, problem = check(forged, registry, **({where[field]: value} if field in where else {}))
    assert approval is None
    assert problem is not None and "bad signature" in problem


def test_a_key_that_is_not_registered_does_not_count(registry: ApproverRegistry) -> None:
    mallory = signing.generate_key()
    approval, problem = check(signing.sign(statement(), mallory), registry)
    assert approval is None
    assert problem is not None and "not in the approvers registry" in problem


def test_claiming_a_registered_key_id_with_another_key_fails(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry
) -> None:
    mallory = signing.sign(statement(), signing.generate_key())
    claimed = SignedApproval(**{**mallory.model_dump(), "key_id": signing.key_id(bob_key)})
    approval, problem = check(claimed, registry)
    assert approval is None
    assert problem is not None and "bob's approval" in problem and "bad signature" in problem


def test_an_expired_key_does_not_count(bob_key: Ed25519PrivateKey) -> None:
    expires = NOW - timedelta(seconds=1)
    registry = ApproverRegistry(approvers=[signing.entry_for(bob_key, "bob", expires=expires)])
    approval, problem = check(signing.sign(statement(), bob_key), registry)
    assert approval is None
    assert problem is not None and "expired at 2025-03-01T13:30:14Z" in problem
    later = ApproverRegistry(
        approvers=[signing.entry_for(bob_key, "bob", expires=NOW + timedelta(days=1))]
    )
    assert check(signing.sign(statement(), bob_key), later)[1] is None


def test_an_approval_binds_to_the_digest_it_signed(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry
) -> None:
    signed = signing.sign(statement(), bob_key)
    approval, problem = check(signed, registry, sha256=OTHER_SHA)
    assert approval is None
    assert problem is not None
    assert f"sha256:{SHA}" in problem and f"sha256:{OTHER_SHA}" in problem
    assert "binds to the digest it signed" in problem
    approval, problem = check(signed, registry, sha256=None)
    assert approval is None and problem is not None and "no artifact digest" in problem


def test_a_valid_signature_for_another_model_does_not_count(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry
) -> None:
    signed = signing.sign(statement(), bob_key)
    approval, problem = check(signed, registry, model_name="churn-v4")
    assert approval is None and problem is not None and "not risk/churn-v4" in problem
    approval, problem = check(signed, registry, namespace="default")
    assert approval is None and problem is not None and "not default/churn-v3" in problem


def test_only_approvable_stages(bob_key: Ed25519PrivateKey, registry: ApproverRegistry) -> None:
    with pytest.raises(SigningError, match="cannot approve stage 'none'"):
        signing.sign(statement(stage="none"), bob_key)
    # A statement for another stage, signed by a registered key, still does not count.
    raw = bob_key.sign(statement(stage="none").canonical_bytes())
    signed = SignedApproval(
        **statement(stage="none").model_dump(),
        key_id=signing.key_id(bob_key),
        signature=base64.b64encode(raw).decode(),
    )
    approval, problem = check(signed, registry)
    assert approval is None
    assert problem is not None and "not staging, production or archived" in problem


def test_a_future_dated_approval_does_not_count(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry
) -> None:
    signed = signing.sign(statement(at=NOW + timedelta(hours=1)), bob_key)
    approval, problem = check(signed, registry)
    assert approval is None and problem is not None and "in the future" in problem
    skewed = signing.sign(statement(at=NOW + timedelta(minutes=2)), bob_key)
    assert check(skewed, registry)[1] is None


@pytest.mark.parametrize("signature", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_malformed_signatures_are_reported(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry, signature: str
) -> None:
    signed = SignedApproval(
        **statement().model_dump(), key_id=signing.key_id(bob_key), signature=signature
    )
    approval, problem = check(signed, registry)
    assert approval is None and problem is not None and "signature" in problem


def test_verify_never_raises_on_junk(registry: ApproverRegistry) -> None:
    junk = SignedApproval.model_construct(stage="production", key_id=None, signature=3)
    approval, problem = check(junk, registry)
    assert approval is None and problem


# --- keys --------------------------------------------------------------------------------------


def test_key_ids_are_short_stable_and_from_the_public_key(bob_key: Ed25519PrivateKey) -> None:
    kid = signing.key_id(bob_key)
    assert kid == signing.key_id(bob_key.public_key())
    assert kid.startswith("ed25519:") and len(kid) == len("ed25519:") + 16
    raw = bob_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert kid == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    encoded = signing.encode_public_key(bob_key.public_key())
    assert base64.b64decode(encoded) == raw
    assert signing.key_id(signing.decode_public_key(encoded)) == kid


def test_private_keys_are_saved_0600_and_never_overwritten(tmp_path: Path) -> None:
    key = signing.generate_key()
    path = tmp_path / "keys" / "k.pem"
    signing.save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert signing.key_id(signing.load_private_key(path)) == signing.key_id(key)
    with pytest.raises(KeyFileError, match="already exists"):
        signing.save_private_key(signing.generate_key(), path)
    assert signing.key_id(signing.load_private_key(path)) == signing.key_id(key)


def test_create_key_uses_the_keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIML024_KEYS_DIR", str(tmp_path / "mine"))
    assert signing.default_keys_dir() == tmp_path / "mine"
    key, path = signing.create_key()
    assert path == tmp_path / "mine" / (signing.key_id(key).replace(":", "-") + ".pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [k.key_id for k in signing.local_keys()] == [signing.key_id(key)]
    monkeypatch.delenv("AIML024_KEYS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert signing.default_keys_dir() == tmp_path / "home" / ".config" / "aiml024" / "keys"


def test_loading_a_key_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        signing.load_private_key(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        signing.load_private_key(garbage)
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        signing.load_private_key(ec_key)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        signing.generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        signing.load_private_key(encrypted)


def test_openssh_ed25519_keys_load(tmp_path: Path) -> None:
    key = signing.generate_key()
    path = tmp_path / "id_ed25519"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    assert signing.key_id(signing.load_private_key(path)) == signing.key_id(key)


def test_find_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no signing key"):
        signing.find_key(None, tmp_path)
    first, first_path = signing.create_key(tmp_path)
    assert signing.key_id(signing.find_key(None, tmp_path)[0]) == signing.key_id(first)
    second, _ = signing.create_key(tmp_path)
    with pytest.raises(KeyFileError, match="several keys"):
        signing.find_key(None, tmp_path)
    for ref in (signing.key_id(second), signing.key_id(second).removeprefix("ed25519:")[:10]):
        assert signing.key_id(signing.find_key(ref, tmp_path)[0]) == signing.key_id(second)
    assert signing.find_key(str(first_path), tmp_path)[1] == first_path
    with pytest.raises(KeyFileError, match="no key 'ed25519:0000'"):
        signing.find_key("ed25519:0000", tmp_path)


# --- the annotation form -----------------------------------------------------------------------


def test_the_annotation_key_is_a_valid_kubernetes_annotation_key(
    bob_key: Ed25519PrivateKey,
) -> None:
    key, value = signing.annotation_for(signing.sign(statement(), bob_key))
    assert key == "approval.aiml024.io/" + signing.key_id(bob_key).removeprefix("ed25519:")
    assert signing.valid_annotation_key(key)
    prefix, _, name = key.partition("/")
    assert len(prefix) <= 253 and 0 < len(name) <= 63
    assert json.loads(value).keys() == {"stage", "sha256", "at", "comment", "keyId", "signature"}
    assert " " not in value.replace("checked the fairness report", "")


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("approval.aiml024.io/0123abcd0123abcd", True),
        ("plain-name", True),
        ("a.b/c_d.e-f", True),
        ("approval.aiml024.io/ed25519:0123", False),  # ':' is not allowed in the name
        ("Approval.aiml024.io/x", False),  # the prefix is a lower-case DNS subdomain
        ("approval.aiml024.io/" + "x" * 64, False),
        ("approval.aiml024.io/-x", False),
        ("/x", False),
        ("approval.aiml024.io/", False),
    ],
)
def test_valid_annotation_key(key: str, valid: bool) -> None:
    assert signing.valid_annotation_key(key) is valid


def test_annotations_round_trip(bob_key: Ed25519PrivateKey, registry: ApproverRegistry) -> None:
    signed = signing.sign(statement(), bob_key)
    annotations = dict([signing.annotation_for(signed)], other="x")
    [(parsed, problem)] = signing.signed_approvals_from(annotations, "churn-v3", "risk")
    assert problem == "" and parsed == signed
    approvals, ignored = signing.verified_approvals(
        annotations, registry, "churn-v3", "risk", SHA, NOW
    )
    assert [a.user for a in approvals] == ["bob"] and ignored == []


def test_an_annotation_copied_to_another_model_fails(
    bob_key: Ed25519PrivateKey, registry: ApproverRegistry
) -> None:
    annotations = dict([signing.annotation_for(signing.sign(statement(), bob_key))])
    for name, namespace in (("churn-v4", "risk"), ("churn-v3", "default")):
        approvals, ignored = signing.verified_approvals(
            annotations, registry, name, namespace, SHA, NOW
        )
        assert approvals == []
        assert len(ignored) == 1 and "bad signature" in ignored[0]


def test_an_edited_annotation_fails(bob_key: Ed25519PrivateKey, registry: ApproverRegistry) -> None:
    key, value = signing.annotation_for(signing.sign(statement(), bob_key))
    edited = json.loads(value) | {"comment": "approved without conditions"}
    approvals, ignored = signing.verified_approvals(
        {key: json.dumps(edited)}, registry, "churn-v3", "risk", SHA, NOW
    )
    assert approvals == [] and "bad signature" in ignored[0]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"stage": "production"}', "missing field"),
        ('{"extra": 1}', "unknown field"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_unreadable_annotations_are_reported_not_raised(value: str, why: str) -> None:
    [(parsed, problem)] = signing.signed_approvals_from(
        {"approval.aiml024.io/0123abcd0123abcd": value}, "churn-v3", "risk"
    )
    assert parsed is None
    assert problem.startswith("annotation approval.aiml024.io/0123abcd0123abcd: ")
    assert why in problem


def test_annotation_fields_are_checked(bob_key: Ed25519PrivateKey) -> None:
    key, value = signing.annotation_for(signing.sign(statement(), bob_key))
    good = json.loads(value)
    cases: list[tuple[dict[str, Any], str, str]] = [
        (good | {"at": "2025-03-01 12:30:15"}, key, "at must be a UTC time"),
        (good | {"at": "2025-13-01T12:30:15Z"}, key, "not a valid time"),
        (good | {"stage": 3}, key, "stage must be a string"),
        (good | {"keyId": "rsa:1"}, key, "keyId must look like"),
        (good, "approval.aiml024.io/0123abcd0123abcd", "belongs under another key"),
        (good | {"sha256": "xyz"}, key, "sha256"),
    ]
    for data, where, why in cases:
        [(parsed, problem)] = signing.signed_approvals_from(
            {where: json.dumps(data)}, "churn-v3", "risk"
        )
        assert parsed is None and why in problem, (data, problem)


# --- the approvers registry --------------------------------------------------------------------


def write_registry(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"approvers": entries}, sort_keys=False))
    return path


def test_a_registry_file_loads(tmp_path: Path, bob_key: Ed25519PrivateKey) -> None:
    entry = signing.entry_for(bob_key, "bob", ["risk"]).wire()
    path = tmp_path / "approvers.yaml"
    path.write_text(
        "# owned by the risk team\napprovers:\n"
        f"  - keyId: {entry['keyId']}\n    user: bob\n    groups: [risk]\n"
        f"    publicKey: {entry['publicKey']}\n    expires: 2030-01-01\n"
    )
    registry = signing.load_registry(path)
    found = registry.get(signing.key_id(bob_key))
    assert found is not None and found.user == "bob" and found.groups == ["risk"]
    assert found.expires == datetime(2030, 1, 1, tzinfo=UTC)
    assert registry.get("ed25519:0000000000000000") is None
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert signing.load_registry(empty).approvers == []


def test_registry_errors_name_the_file_and_the_entry(
    tmp_path: Path, bob_key: Ed25519PrivateKey
) -> None:
    bob = signing.entry_for(bob_key, "bob").wire()
    alice = signing.entry_for(signing.generate_key(), "alice").wire()
    path = tmp_path / "approvers.yaml"

    write_registry(path, [bob, alice, bob])
    with pytest.raises(RegistryError) as error:
        signing.load_registry(path)
    assert str(error.value) == (
        f"approvers registry {path}: approvers[2] (keyId {bob['keyId']}): "
        "duplicate keyId, already at approvers[0]"
    )

    write_registry(path, [bob, alice | {"keyId": bob["keyId"]}])
    with pytest.raises(RegistryError, match=r"approvers\[1\] .*does not match publicKey"):
        signing.load_registry(path)

    write_registry(path, [bob | {"publicKey": "not*base64"}])
    with pytest.raises(RegistryError, match=rf"{path}: approvers\[0\] .*not valid base64"):
        signing.load_registry(path)

    short = base64.b64encode(b"\0" * 16).decode()
    write_registry(path, [bob | {"publicKey": short}])
    with pytest.raises(RegistryError, match="must be 32 bytes"):
        signing.load_registry(path)

    write_registry(path, [bob | {"email": "bob@example.com"}])
    with pytest.raises(RegistryError, match=r"approvers\[0\] .*email: unknown field"):
        signing.load_registry(path)

    write_registry(path, [{k: v for k, v in bob.items() if k != "user"}])
    with pytest.raises(RegistryError, match=r"approvers\[0\] .*user"):
        signing.load_registry(path)

    path.write_text("approvers: [unclosed\n")
    with pytest.raises(RegistryError, match=f"{path}: not valid YAML"):
        signing.load_registry(path)

    path.write_text("- just a list\n")
    with pytest.raises(RegistryError, match="must be a mapping"):
        signing.load_registry(path)

    with pytest.raises(RegistryError, match="does not exist"):
        signing.load_registry(tmp_path / "missing.yaml")


def test_registry_from_configmap(bob_key: Ed25519PrivateKey) -> None:
    text = signing.entry_yaml(signing.entry_for(bob_key, "bob", ["risk"]))
    registry = signing.registry_from_configmap({"approvers.yaml": "approvers:\n" + text})
    assert [e.user for e in registry.approvers] == ["bob"]
    with pytest.raises(RegistryError, match="aiml024-system/aiml024-approvers has no data key"):
        signing.registry_from_configmap({})
    with pytest.raises(RegistryError, match=r"aiml024-approvers \(approvers.yaml\): approvers"):
        signing.registry_from_configmap({"approvers.yaml": "approvers: [1]"})


def test_default_registry_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIML024_APPROVERS_FILE", raising=False)
    assert signing.default_registry_path(tmp_path / "policy") == (
        tmp_path / "policy" / "approvers.yaml"
    )
    monkeypatch.setenv("AIML024_APPROVERS_FILE", str(tmp_path / "x.yaml"))
    assert signing.default_registry_path(tmp_path / "policy") == tmp_path / "x.yaml"


def test_register_appends_keeps_comments_and_refuses_duplicates(
    tmp_path: Path, bob_key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "approvers.yaml"
    bob = signing.entry_for(bob_key, "bob", ["risk"])
    signing.register(path, bob)
    assert signing.load_registry(path).approvers == [bob]

    path.write_text("# the risk team's approvers\napprovers:\n" + "".join(
        "  " + line + "\n" for line in signing.entry_yaml(bob).splitlines()
    ))  # fmt: skip
    alice = signing.entry_for(signing.generate_key(), "alice")
    signing.register(path, alice)
    assert path.read_text().startswith("# the risk team's approvers\n")
    assert signing.load_registry(path).approvers == [bob, alice]

    before = path.read_text()
    with pytest.raises(RegistryError, match=f"already lists keyId {bob.key_id}"):
        signing.register(path, bob)
    assert path.read_text() == before

    path.write_text("approvers: {}\n")
    with pytest.raises(RegistryError, match="approvers must be a list"):
        signing.register(path, alice)
    assert list(tmp_path.glob(".*.tmp")) == []


# --- carrying approvals to the cluster ---------------------------------------------------------


def test_approval_patch_is_a_partial_model(bob_key: Ed25519PrivateKey) -> None:
    signed = signing.sign(statement(), bob_key)
    patch = signing.approval_patch("churn-v3", "risk", signed)
    key, value = signing.annotation_for(signed)
    assert patch == {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "churn-v3", "namespace": "risk", "annotations": {key: value}},
    }
    other = signing.sign(statement(), signing.generate_key())
    both = signing.approval_patch("churn-v3", "risk", [signed, other], argocd=True)
    annotations = both["metadata"]["annotations"]
    assert len([k for k in annotations if signing.is_approval_annotation(k)]) == 2
    assert annotations["argocd.argoproj.io/sync-options"] == "ServerSideApply=true,Prune=false"
    with pytest.raises(SigningError, match="not risk/churn-v4"):
        signing.approval_patch("churn-v4", "risk", signed)


def test_kubectl_commands(bob_key: Ed25519PrivateKey) -> None:
    signed = signing.sign(statement(comment="it's fine; really"), bob_key)
    words = shlex.split(signing.kubectl_annotate_command(signed))
    key, value = signing.annotation_for(signed)
    assert words == [
        "kubectl", "annotate", "--overwrite", "-n", "risk",
        "models.aiml024.io/churn-v3", f"{key}={value}",
    ]  # fmt: skip
    apply = shlex.split(signing.kubectl_apply_command(signed, "approval.yaml"))
    assert apply[:3] == ["kubectl", "apply", "--server-side"]
    assert f"--field-manager={signing.field_manager(signed)}" in apply
    assert signing.field_manager(signed) != signing.field_manager(
        signing.sign(statement(), signing.generate_key())
    )
