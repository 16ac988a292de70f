"""On one machine the author of an Experiment is who first applied it, as a webhook would stamp."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiml024 import signing
from aiml024.api import Experiment, parse_object
from aiml024.local.controlplane import ApplyError, LocalControlPlane, Progress


def forecasting(claimed_author: str):
    # An unsupported task stops at compile time, after the object is stored: no training needed
    # (built directly: parse_object, like `aiml024 apply`, refuses the task up front).
    return Experiment.model_validate({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "sales", "annotations": {"aiml024.io/applied-by": claimed_author}},
        "spec": {"task": "forecasting", "data": {"uri": "file:///x.csv"}, "target": "y"},
    })  # fmt: skip


def test_a_claimed_author_is_replaced_and_the_first_author_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = LocalControlPlane(tmp_path)
    monkeypatch.setenv("AIML024_USER", "alice")
    with pytest.raises(ApplyError, match="spec.task"):
        plane.apply([forecasting("mallory")], Progress())
    stored = plane.store.get("Experiment", "sales")
    assert stored["metadata"]["annotations"]["aiml024.io/applied-by"] == "alice"
    assert stored["status"]["conditions"][-1]["reason"] == "InvalidSpec"

    monkeypatch.setenv("AIML024_USER", "bob")
    with pytest.raises(ApplyError):
        plane.apply([forecasting("bob")], Progress())
    assert (
        plane.store.get("Experiment", "sales")["metadata"]["annotations"]["aiml024.io/applied-by"]
        == "alice"
    )


def test_a_spec_change_makes_its_author_the_author(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four eyes holds against whoever last changed what a model is trained on."""
    plane = LocalControlPlane(tmp_path)
    monkeypatch.setenv("AIML024_USER", "alice")
    with pytest.raises(ApplyError):
        plane.apply([forecasting("alice")], Progress())
    changed = forecasting("alice")
    changed.spec.target = "revenue"
    monkeypatch.setenv("AIML024_USER", "bob")
    with pytest.raises(ApplyError):
        plane.apply([changed], Progress())
    annotations = plane.store.get("Experiment", "sales")["metadata"]["annotations"]
    assert annotations["aiml024.io/applied-by"] == "bob"


SHA = "c" * 64


def hand_model(owner: str = "mallory", **annotations: str):
    return parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "imported-v1", "annotations": annotations},
        "spec": {"source": {"artifactUri": "file:///models/imported", "sha256": SHA},
                 "task": "classification", "owner": owner},
    })  # fmt: skip


def test_a_models_owner_is_who_first_applied_it_never_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = LocalControlPlane(tmp_path)
    monkeypatch.setenv("AIML024_USER", "alice")
    plane.apply([hand_model(owner="bob")], Progress())
    assert plane.store.get("Model", "imported-v1")["spec"]["owner"] == "alice"
    monkeypatch.setenv("AIML024_USER", "mallory")
    forged = '[{"user":"bob","stage":"production","at":"2026-01-01T00:00:00Z"}]'
    plane.apply([hand_model(owner="mallory", **{"aiml024.io/approvals": forged})], Progress())
    stored = plane.store.get("Model", "imported-v1")
    assert stored["spec"]["owner"] == "alice"
    assert "aiml024.io/approvals" not in stored["metadata"]["annotations"]
    assert stored["status"]["approvals"] == []


@pytest.fixture
def signed_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalControlPlane:
    """alice owns the model; bob (risk-officer) has a key in the approvers registry."""
    monkeypatch.setenv("AIML024_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("AIML024_APPROVERS_FILE", str(tmp_path / "approvers.yaml"))
    key, _ = signing.create_key()
    signing.register(tmp_path / "approvers.yaml", signing.entry_for(key, "bob", ["risk-officer"]))
    plane = LocalControlPlane(tmp_path / "state")
    monkeypatch.setenv("AIML024_USER", "alice")
    plane.apply([hand_model()], Progress())
    return plane


def test_with_an_approvers_registry_an_approval_is_a_verified_signature(
    signed_setup: LocalControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIML024_USER", "whoever-runs-it")  # the key is the identity, not the login
    model = signed_setup.approve("imported-v1", "production", "whoever-runs-it", "card read")
    assert model.status is not None
    [approval] = model.status.approvals
    assert (approval.user, approval.groups, approval.sha256) == ("bob", ["risk-officer"], SHA)
    assert approval.key_id and approval.comment == "card read"


def test_a_key_outside_the_registry_or_the_authors_key_does_not_approve(
    signed_setup: LocalControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger, stranger_file = signing.create_key(tmp_path / "other-keys")
    with pytest.raises(ApplyError, match="not in the approvers registry"):
        signed_setup.approve("imported-v1", "production", "x", key=str(stranger_file))
    signing.register(tmp_path / "approvers.yaml", signing.entry_for(stranger, "alice"))
    with pytest.raises(ApplyError, match="alice authored model imported-v1"):
        signed_setup.approve("imported-v1", "production", "x", key=str(stranger_file))
    model = signed_setup.reconcile_model("imported-v1")
    assert model.status is not None and model.status.approvals == []


def test_a_denied_promotion_moves_neither_the_spec_nor_the_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the webhook refuses it in a cluster: a hand-registered model without evidence."""
    plane = LocalControlPlane(tmp_path)
    monkeypatch.setenv("AIML024_USER", "alice")
    plane.apply([hand_model()], Progress())
    model = plane.promote("imported-v1", "production")
    assert model.status is not None and model.status.policy is not None
    assert model.status.policy.decision == "deny" and model.status.policy.stage == "production"
    assert model.spec.stage == "staging" and model.status.stage == "none"
