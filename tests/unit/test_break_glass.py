"""Break-glass on one machine: `aiml024 promote --break-glass` pushes a Model past the quality
rules with a written justification, never past integrity, never by its author, only for the
artifact digest it names, and it shows in the decision, the Events and the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aiml024 import audit
from aiml024.api import Model, parse_object
from aiml024.api.common import BREAK_GLASS_RECORDS
from aiml024.cli.main import app
from aiml024.local.controlplane import LocalControlPlane, Progress
from aiml024.policy import counted_break_glass, evaluate, policy_input
from aiml024.reconcile import break_glass as rules
from aiml024.reconcile.clock import now

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
SHA = "9f2c" * 16
OTHER_SHA = "77aa" * 16
WHY = "INC-4711: fraud spike; the fixed model ships now, card follows by Friday"
UNFAIR = "fairness_demographic_parity: sex.demographic_parity_difference 0.27 > 0.10"
runner = CliRunner()


def evidence(sha: str = SHA, lineage: bool = True) -> dict[str, Any]:
    """What a registered model records: everything production needs but fairness (0.27)."""
    status: dict[str, Any] = {
        "artifactUri": "file:///models/churn", "sha256": sha,
        "metrics": {"auc": 0.84}, "baselineMetrics": {"auc": 0.78}, "primaryMetric": "auc",
        "evidence": {
            "modelCardUri": "file:///models/churn/model_card.md", "modelCardComplete": True,
            "piiColumns": [], "piiAction": "drop", "sensitiveAttributes": ["sex"],
            "fairness": {"sex.demographic_parity_difference": 0.27,
                         "sex.equalized_odds_difference": 0.05},
            "calibration": {"ece": 0.02},
        },
    }  # fmt: skip
    if lineage:
        status["lineage"] = {"datasetUri": "file:///data/churn.csv", "datasetFingerprint": "fp-1",
                             "specHash": "spec-1", "codeVersion": "0.1.0"}  # fmt: skip
    return status


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalControlPlane:
    """alice registered churn-v1 (so she is its author); it is in staging, and production
    denies it for fairness alone."""
    monkeypatch.setenv("AIML024_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("AIML024_USER", "alice")
    monkeypatch.delenv("AIML024_POLICY_DIR", raising=False)
    plane = LocalControlPlane(tmp_path / "state", POLICIES)
    register(plane)
    return plane


def register(plane: LocalControlPlane, name: str = "churn-v1", **status: Any) -> None:
    manifest = parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model", "metadata": {"name": name},
        "spec": {"source": {"artifactUri": "file:///models/churn", "sha256": SHA},
                 "task": "classification"},
    })  # fmt: skip
    plane.apply([manifest], Progress())
    plane.store.update_status("Model", name, evidence(**status))
    gated = plane.reconcile_model(name).status
    assert gated is not None and gated.stage == (
        "staging" if status.get("lineage", True) else "none"
    )


def promote(*args: str, user: str) -> Any:
    return runner.invoke(
        app, ["promote", *args], env={"AIML024_USER": user}, catch_exceptions=False
    )


def stored(plane: LocalControlPlane, name: str = "churn-v1") -> Model:
    return Model.model_validate(plane.store.get("Model", name))


def entries(plane: LocalControlPlane, kind: str | None = None) -> list[dict[str, Any]]:
    found = audit.AuditLog(plane.home.as_uri(), "default").entries()
    return [e for e in found if kind is None or e["kind"] == kind]


def events(plane: LocalControlPlane, reason: str) -> list[str]:
    found = plane.store.events_for("Model", "churn-v1", limit=200)
    return [e["message"] for e in found if e["reason"] == reason]


# --- the local flow, as a user sees it ---------------------------------------------------------


def test_break_glass_pushes_a_model_past_fairness_visibly_and_audited(
    plane: LocalControlPlane,
) -> None:
    denied = promote("model/churn-v1", "--stage", "production", user="alice")
    assert denied.exit_code == 1
    assert "model/churn-v1: deny for stage production" in denied.stdout
    assert UNFAIR in denied.stdout
    assert stored(plane).spec.stage == "staging"

    broke = promote("model/churn-v1", "--stage", "production", "--break-glass", WHY, user="carol")
    assert broke.exit_code == 0, broke.output
    note = f"break_glass: carol overrode {UNFAIR} ({json.dumps(WHY)})"
    assert "require_approval for stage production" in broke.stdout
    assert note in broke.stdout
    model = stored(plane)
    assert model.spec.stage == "production" and model.status.stage == "staging"  # type: ignore[union-attr]
    [record] = json.loads(model.metadata.annotations[BREAK_GLASS_RECORDS])
    assert {k: record[k] for k in ("user", "stage", "justification", "sha256")} == {
        "user": "carol", "stage": "production", "justification": WHY, "sha256": SHA,
    }  # fmt: skip

    # Production still needs an approval, and not from the one who broke the glass.
    self_approved = runner.invoke(
        app, ["approve", "model/churn-v1", "--stage", "production"], env={"AIML024_USER": "carol"}
    )
    assert self_approved.exit_code == 0, self_approved.output
    assert "approval_ignored: carol broke the glass for this promotion" in self_approved.stdout
    assert stored(plane).status.stage == "staging"  # type: ignore[union-attr]
    approved = runner.invoke(
        app, ["approve", "model/churn-v1", "--stage", "production"], env={"AIML024_USER": "bob"}
    )
    assert approved.exit_code == 0, approved.output
    assert "allow for stage production; now in stage production" in approved.stdout
    model = stored(plane)
    assert model.status.stage == "production"  # type: ignore[union-attr]
    assert model.status.policy.violations == [note]  # type: ignore[union-attr]
    described = runner.invoke(app, ["describe", "model/churn-v1"])
    assert note in described.stdout

    # Audited once, as the break-glass user, with what it overrode and for which artifact.
    [entry] = entries(plane, "break-glass")
    assert entry["actor"] == "carol"
    assert entry["details"]["justification"] == WHY
    assert entry["details"]["overridden"] == [UNFAIR]
    assert (entry["details"]["digest"], entry["details"]["stage"]) == (SHA, "production")
    kinds = [e["kind"] for e in entries(plane)]
    assert kinds[kinds.index("break-glass") + 1] == "policy"  # then the decision it made
    assert events(plane, "BreakGlass") == [f"stage production: {note}"]
    listed = runner.invoke(app, ["audit", "log", "--kind", "break-glass"])
    assert (
        "carol  model/default/churn-v1  broke the glass for stage production of 9f2c9f2c9f2c, "
        f"overriding fairness_demographic_parity: {WHY}" in listed.stdout
    )
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_short_justification_is_refused(plane: LocalControlPlane) -> None:
    short = promote("model/churn-v1", "--break-glass", "  it's urgent!  ", user="carol")
    assert short.exit_code == 1
    assert "at least 20 characters" in short.stderr and '"it\'s urgent!"' in short.stderr
    model = stored(plane)
    assert BREAK_GLASS_RECORDS not in model.metadata.annotations
    assert model.spec.stage == "staging" and entries(plane, "break-glass") == []


def test_the_author_cannot_break_the_glass_on_their_own_model(plane: LocalControlPlane) -> None:
    own = promote("model/churn-v1", "--break-glass", WHY, user="Alice")
    assert own.exit_code == 1
    assert "Alice authored model churn-v1 and cannot break the glass on it" in own.stderr
    assert BREAK_GLASS_RECORDS not in stored(plane).metadata.annotations


def test_an_integrity_violation_is_never_overridden(
    plane: LocalControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(plane, "no-lineage", lineage=False)
    result = promote("model/no-lineage", "--break-glass", WHY, user="carol")
    assert result.exit_code == 1
    assert "deny for stage production" in result.stdout
    assert "lineage_missing: lineage.datasetFingerprint" in result.stdout
    # The quality violation it would have overridden is listed as such, the integrity one
    # denies; the refused request leaves neither the stage nor the record behind.
    assert f"break_glass: carol overrode {UNFAIR}" in result.stdout
    model = stored(plane, "no-lineage")
    assert model.spec.stage == "staging" and model.status.stage == "none"  # type: ignore[union-attr]
    assert BREAK_GLASS_RECORDS not in model.metadata.annotations
    assert model.status.policy.decision == "deny"  # type: ignore[union-attr]
    # The attempt itself is on the record.
    [attempt] = entries(plane, "break-glass")
    assert attempt["actor"] == "carol" and attempt["subject"]["name"] == "no-lineage"


def test_a_new_artifact_digest_drops_the_break_glass(plane: LocalControlPlane) -> None:
    plane.promote("churn-v1", "production", break_glass=WHY, user="carol")
    model = plane.approve("churn-v1", "production", "bob")
    assert model.status.stage == "production"  # type: ignore[union-attr]

    # The artifact is replaced: the break-glass (and the approval) named the old digest.
    status = plane.store.get("Model", "churn-v1")["status"]
    plane.store.update_status("Model", "churn-v1", {**status, "sha256": OTHER_SHA})
    model = plane.reconcile_model("churn-v1")
    assert model.status.policy.decision == "deny"  # type: ignore[union-attr]
    assert UNFAIR in model.status.policy.violations  # type: ignore[union-attr]
    assert not any(v.startswith("break_glass") for v in model.status.policy.violations)  # type: ignore[union-attr]
    assert model.status.stage == "staging"  # type: ignore[union-attr]
    [ignored] = events(plane, "BreakGlassIgnored")[-1:]
    assert ignored == f"carol broke the glass for artifact {SHA}, not the model's {OTHER_SHA}"
    assert len(entries(plane, "break-glass")) == 1  # not recorded again

    # Breaking the glass again for the new digest counts again.
    again = plane.promote("churn-v1", "production", break_glass=WHY, user="dave")
    assert (
        f"break_glass: dave overrode {UNFAIR} ({json.dumps(WHY)})" in again.status.policy.violations
    )  # type: ignore[union-attr]
    assert [e["actor"] for e in entries(plane, "break-glass")] == ["carol", "dave"]


def test_the_record_cannot_be_forged_or_removed_by_applying_a_manifest(
    plane: LocalControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = json.dumps([{"user": "carol", "groups": [], "stage": "production",
                          "justification": WHY, "at": "2026-01-01T00:00:00Z", "sha256": SHA}])  # fmt: skip
    manifest = parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "churn-v1", "annotations": {BREAK_GLASS_RECORDS: forged}},
        "spec": {"source": {"artifactUri": "file:///models/churn", "sha256": SHA},
                 "task": "classification", "stage": "production"},
    })  # fmt: skip
    plane.apply([manifest], Progress())
    model = stored(plane)
    assert BREAK_GLASS_RECORDS not in model.metadata.annotations
    assert model.status.policy.decision == "deny"  # type: ignore[union-attr]

    plane.promote("churn-v1", "production", break_glass=WHY, user="carol")
    recorded = stored(plane).metadata.annotations[BREAK_GLASS_RECORDS]
    manifest.metadata.annotations = {}
    plane.apply([manifest], Progress())
    assert stored(plane).metadata.annotations[BREAK_GLASS_RECORDS] == recorded


def test_the_promote_command_documents_the_option() -> None:
    result = runner.invoke(app, ["promote", "--help"], env={"COLUMNS": "200"})
    assert "--break-glass" in result.stdout


# --- the rules, shared by both control planes ---------------------------------------------------


def model_with(records: list[dict[str, Any]], sha: str = SHA, owner: str = "alice") -> Model:
    return Model.model_validate({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "churn-v1", "annotations": {BREAK_GLASS_RECORDS: json.dumps(records)}},
        "spec": {"source": {"artifactUri": "file:///m", "sha256": sha}, "task": "classification",
                 "owner": owner, "stage": "production"},
        "status": evidence(sha=sha),
    })  # fmt: skip


def record(user: str = "carol", **changes: Any) -> dict[str, Any]:
    base = {"user": user, "groups": [], "stage": "production", "justification": WHY,
            "at": "2026-01-01T00:00:00Z", "sha256": SHA}  # fmt: skip
    return {**base, **changes}


def test_the_newest_record_for_this_stage_and_digest_counts() -> None:
    records = [record("carol"), record("dave", sha256=OTHER_SHA), record("erin", stage="staging")]
    counted, ignored = counted_break_glass(model_with(records), "production")
    assert counted is not None and counted["user"] == "carol"
    assert ignored == [f"dave broke the glass for artifact {OTHER_SHA}, not the model's {SHA}"]
    counted, _ = counted_break_glass(model_with([record("carol"), record("frank")]), "production")
    assert counted is not None and counted["user"] == "frank"
    assert counted_break_glass(model_with([record("ALICE")]), "production")[0] is None
    short = record(justification="  " + "x" * 19 + "  ")
    assert counted_break_glass(model_with([short]), "production")[0] is None
    exact = record(justification="x" * 20)
    assert counted_break_glass(model_with([exact]), "production")[0] == exact


def test_the_input_carries_only_a_counted_break_glass() -> None:
    assert "breakGlass" not in policy_input(model_with([]), "production")
    assert policy_input(model_with([record()]), "production")["breakGlass"] == record()
    assert "breakGlass" not in policy_input(model_with([record()]), "staging")
    assert "breakGlass" not in policy_input(model_with([record("alice")]), "production")
    assert "breakGlass" not in policy_input(model_with([record()]), "production", break_glass=None)


def test_the_gate_reports_what_was_overridden() -> None:
    gate = evaluate(model_with([record()]), "production", POLICIES, [])
    assert gate.decision == "require_approval" and gate.overridden == [UNFAIR]
    assert evaluate(model_with([]), "production", POLICIES, []).overridden is None


def test_a_record_names_the_digest_and_refuses_what_cannot_count() -> None:
    model = model_with([])
    made, problem = rules.break_glass_record(
        model, "carol", "production", f"  {WHY} ", now(), ["sre"]
    )
    assert problem is None and made is not None
    assert {k: made[k] for k in ("user", "groups", "stage", "justification", "sha256")} == {
        "user": "carol", "groups": ["sre"], "stage": "production", "justification": WHY,
        "sha256": SHA,
    }  # fmt: skip
    refused = {
        "archived": rules.break_glass_record(model, "carol", "archived", WHY, now())[1],
        "short": rules.break_glass_record(model, "carol", "production", "x" * 19, now())[1],
        "author": rules.break_glass_record(model, "alice", "production", WHY, now())[1],
    }
    assert "not 'archived'" in str(refused["archived"])
    assert "at least 20 characters" in str(refused["short"])
    assert "alice authored model churn-v1" in str(refused["author"])
    unregistered = model.model_copy(update={"status": None})
    assert "no registered artifact" in str(
        rules.break_glass_record(unregistered, "carol", "production", WHY, now())[1]
    )


def test_the_role_is_its_own_grant_and_not_aggregated() -> None:
    roles = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all((REPO / "manifests" / "user-roles.yaml").read_text())
    }
    role = roles["aiml024-break-glass"]
    assert not role["metadata"].get("labels")
    assert role["rules"] == [
        {"apiGroups": ["aiml024.io"], "resources": ["models"],
         "verbs": ["get", "list", "watch", "patch", "break-glass"]},
    ]  # fmt: skip
    for name, other in roles.items():
        if name != "aiml024-break-glass":
            assert all(
                "break-glass" not in r["verbs"] and "*" not in r["verbs"] for r in other["rules"]
            )
