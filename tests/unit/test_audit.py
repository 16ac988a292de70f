"""The audit log: a hash chain of decisions that `aiml024 audit verify` shows tampering with."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiml024 import audit
from aiml024.api import ModelStatus, parse_object
from aiml024.api.model import Approval, PolicyDecision
from aiml024.cli.main import app
from aiml024.local.controlplane import LocalControlPlane, Progress
from aiml024.policy import write_pin

runner = CliRunner()
AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MODEL = {"kind": "Model", "namespace": "default", "name": "churn-model-v1"}


def written(root: Path, count: int = 4) -> Path:
    """A log of `count` policy decisions under `root`; returns the namespace's directory."""
    log = audit.AuditLog(root.as_uri(), "default")
    for number in range(count):
        details = {"decision": "allow", "stage": "staging", "violations": [], "n": number}
        log.append(audit.Record("policy", "alice", MODEL, details), at=AT)
    return root / "audit" / "default"


def entry_file(directory: Path, seq: int) -> Path:
    return directory / f"{seq:012d}.json"


def rewrite(path: Path, content: str | dict) -> None:
    """What someone with write access to the store does (entries are read-only files)."""
    path.chmod(0o644)
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def verify_cli(root: Path, *args: str):
    return runner.invoke(app, ["audit", "verify", "--store", root.as_uri(), *args])


def one_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --- an intact log ----------------------------------------------------------------------------


def test_each_entry_chains_to_the_one_before_and_the_log_verifies(tmp_path: Path) -> None:
    directory = written(tmp_path)
    entries = [load(entry_file(directory, seq)) for seq in (1, 2, 3, 4)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev"] == "0" * 64
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert all(e["hash"] == audit.entry_hash(e) for e in entries)
    assert entries[0]["at"] == "2026-01-01T12:00:00Z" and entries[0]["subject"] == MODEL
    assert load(directory / "head.json")["seq"] == 4

    result = verify_cli(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"default: 4 entries verified; the chain is intact up to entry 4 ({entries[3]['hash']})"
    )


def test_an_entry_is_never_overwritten_by_a_writer_that_lost_the_race(tmp_path: Path) -> None:
    """Both writers read the tip at entry 1; the second to write finds seq 2 taken and chains
    onto the first's entry instead of replacing it."""
    directory = written(tmp_path, 1)
    slow = audit.AuditLog(tmp_path.as_uri(), "default")
    stale = slow._tip()
    fast = audit.AuditLog(tmp_path.as_uri(), "default")
    theirs = fast.append(audit.Record("approval", "bob", MODEL, {"stage": "production"}))
    real_tip = slow._tip
    calls = iter([stale])
    slow._tip = lambda: next(calls, None) or real_tip()  # type: ignore[method-assign]

    mine = slow.append(audit.Record("policy", "alice", MODEL, {"decision": "allow"}))
    assert load(entry_file(directory, 2)) == theirs, "the taken seq was not overwritten"
    assert (mine["seq"], mine["prev"]) == (3, theirs["hash"])
    assert slow.verify() == []


def test_write_once_holds_on_any_fsspec_store() -> None:
    log = audit.AuditLog(f"memory://audit-{uuid.uuid4().hex}", "ml")
    first = log.append(audit.Record("policy", "operator", MODEL, {"decision": "allow"}), at=AT)
    with pytest.raises(FileExistsError):
        log._create(log._at("000000000001.json"), b"{}")
    assert json.loads(log.objects()[0][1]) == first
    second = log.append(audit.Record("rollback", "operator", MODEL, {"reason": "slow"}), at=AT)
    assert second["prev"] == first["hash"] and log.verify() == []


def test_concurrent_writers_in_the_operator_get_distinct_seqs(tmp_path: Path) -> None:
    async def main() -> None:
        records = [audit.Record("policy", "op", MODEL, {"n": n}) for n in range(3)]
        await asyncio.gather(*(audit.record_async(tmp_path.as_uri(), records) for _ in range(4)))

    asyncio.run(main())
    log = audit.AuditLog(tmp_path.as_uri(), "default")
    assert [e["seq"] for e in log.entries()] == list(range(1, 13))
    assert log.verify() == []


# --- tampering --------------------------------------------------------------------------------


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    directory = written(tmp_path)
    entry = load(entry_file(directory, 2))
    entry["details"]["decision"] = "deny"
    rewrite(entry_file(directory, 2), entry)
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr).startswith(
        "error: default/000000000002.json: edited: its content does not match its hash"
    )


def test_reordered_entries_are_named(tmp_path: Path) -> None:
    directory = written(tmp_path)
    second, third = entry_file(directory, 2).read_text(), entry_file(directory, 3).read_text()
    rewrite(entry_file(directory, 2), third)
    rewrite(entry_file(directory, 3), second)
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr).startswith(
        "error: default/000000000002.json: holds entry 3, not 2: entries were reordered or moved"
    )


def test_reordering_with_renumbered_and_rehashed_entries_breaks_the_prev_links(
    tmp_path: Path,
) -> None:
    directory = written(tmp_path)
    second, third = load(entry_file(directory, 2)), load(entry_file(directory, 3))
    for entry, seq in ((third, 2), (second, 3)):
        entry["seq"] = seq
        entry["hash"] = audit.entry_hash(entry)
        rewrite(entry_file(directory, seq), entry)
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr).startswith(
        "error: default/000000000002.json: its prev does not match the hash of entry 1"
    )


def test_a_deleted_middle_entry_is_named(tmp_path: Path) -> None:
    directory = written(tmp_path)
    entry_file(directory, 2).unlink()
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr) == (
        "error: default/000000000002.json: missing: the log goes from entry 1 to entry 3, so "
        "entry 2 was deleted"
    )


def test_a_deleted_newest_entry_is_caught_by_the_head_record(tmp_path: Path) -> None:
    directory = written(tmp_path)
    entry_file(directory, 4).unlink()
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr) == (
        "error: default/000000000004.json: missing: the head record names entry 4 but the log "
        "ends at entry 3: the newest entries were deleted"
    )
    # The next decision keeps the gap visible: it chains onto the head, not onto entry 3.
    log = audit.AuditLog(tmp_path.as_uri(), "default")
    assert log.append(audit.Record("policy", "alice", MODEL), at=AT)["seq"] == 5
    assert [str(p) for p in log.verify()] == [
        "000000000004.json: missing: the log goes from entry 3 to entry 5, so entry 4 was deleted"
    ]


def test_a_rewrite_with_every_hash_recomputed_is_caught_by_the_head_record(
    tmp_path: Path,
) -> None:
    directory = written(tmp_path)
    prev = load(entry_file(directory, 1))["hash"]
    for seq in (2, 3, 4):
        entry = load(entry_file(directory, seq))
        if seq == 2:
            entry["actor"] = "mallory"
        entry["prev"] = prev
        entry["hash"] = prev = audit.entry_hash(entry)
        rewrite(entry_file(directory, seq), entry)
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr).startswith(
        "error: default/000000000004.json: replaced: its hash"
    )
    assert "that the head record names" in result.stderr


def test_a_deleted_or_unreadable_head_record_is_named(tmp_path: Path) -> None:
    directory = written(tmp_path)
    rewrite(directory / "head.json", "{not json")
    assert one_error(verify_cli(tmp_path).stderr) == (
        "error: default/head.json: unreadable: not a head record (edited or truncated)"
    )
    (directory / "head.json").unlink()
    result = verify_cli(tmp_path)
    assert result.exit_code == 1
    assert one_error(result.stderr).startswith("error: default/head.json: missing")


def test_what_the_store_alone_cannot_show_a_head_seen_elsewhere_does(tmp_path: Path) -> None:
    """Deleting the newest entry and setting the head object back leaves a consistent chain;
    the entry's AuditRecorded event (its seq:hash) still names it."""
    directory = written(tmp_path)
    newest = load(entry_file(directory, 4))
    _, _, message = audit.event(newest)
    seen = message.split()[2]  # "audit entry 4:<hash> (policy)"
    entry_file(directory, 4).unlink()
    third = load(entry_file(directory, 3))
    rewrite(directory / "head.json", {"seq": 3, "hash": third["hash"], "at": third["at"]})

    assert verify_cli(tmp_path).exit_code == 0, "documented: not detectable from the store"
    result = verify_cli(tmp_path, "-n", "default", "--head", seen)
    assert result.exit_code == 1
    assert one_error(result.stderr) == (
        "error: default/000000000004.json: missing: the head given (--head) names entry 4 but "
        "the log ends at entry 3: the newest entries were deleted"
    )


def test_an_unreadable_entry_is_named(tmp_path: Path) -> None:
    directory = written(tmp_path)
    rewrite(entry_file(directory, 3), '{"seq": 3, "act')
    assert one_error(verify_cli(tmp_path).stderr).startswith(
        "error: default/000000000003.json: unreadable"
    )


# --- the CLI ----------------------------------------------------------------------------------


def test_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    written(tmp_path)
    needs_ns = verify_cli(tmp_path, "--head", "4")
    assert needs_ns.exit_code == 2 and "give --namespace too" in needs_ns.stderr
    bad = verify_cli(tmp_path, "-n", "default", "--head", "four")
    assert bad.exit_code == 2 and "--head takes SEQ or SEQ:HASH" in bad.stderr
    bad_ns = verify_cli(tmp_path, "-n", "Not_A_Namespace")
    assert bad_ns.exit_code == 2 and "cannot read the audit log" in bad_ns.stderr


def test_verify_with_no_log_says_so(tmp_path: Path) -> None:
    result = verify_cli(tmp_path)
    assert result.exit_code == 0 and "no audit log under" in result.stdout


def test_log_prints_entries_as_text_and_json(tmp_path: Path) -> None:
    log = audit.AuditLog(tmp_path.as_uri(), "default")
    approval = {"stage": "production", "digest": "c" * 64, "keyId": "k1", "comment": "ok"}
    log.append(audit.Record("approval", "bob", MODEL, approval), at=AT)
    traffic = {"from": {"stable": 80, "canary": 20}, "to": {"stable": 100, "canary": 0}}
    dep = {**MODEL, "kind": "Deployment", "name": "churn"}
    log.append(audit.Record("rollback", "operator", dep, {**traffic, "reason": "slow"}), at=AT)

    text = runner.invoke(app, ["audit", "log", "--store", tmp_path.as_uri()])
    assert text.exit_code == 0, text.output
    header, first, second = text.stdout.strip().splitlines()
    assert header.split() == ["SEQ", "AT", "KIND", "ACTOR", "SUBJECT", "WHAT"]
    assert first.split()[:5] == ["1", "2026-01-01T12:00:00Z", "approval", "bob", "model/default/churn-model-v1"]  # fmt: skip
    assert first.endswith("approved stage production of cccccccccccc with key k1: ok")
    assert second.endswith("traffic canary 20%, stable 80% -> canary 0%, stable 100%: slow")

    as_json = runner.invoke(app, ["audit", "log", "--store", tmp_path.as_uri(), "--json"])
    assert [e["kind"] for e in json.loads(as_json.stdout)] == ["approval", "rollback"]
    only = runner.invoke(app, ["audit", "log", "--store", tmp_path.as_uri(), "--kind", "rollback"])
    assert len(only.stdout.strip().splitlines()) == 2


def test_log_warns_when_the_chain_does_not_verify(tmp_path: Path) -> None:
    directory = written(tmp_path, 3)
    entry_file(directory, 2).unlink()
    result = runner.invoke(app, ["audit", "log", "--store", tmp_path.as_uri()])
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 3  # header and the two entries left
    assert result.stderr.startswith("warning: default/000000000002.json: missing")


# --- what decisions record ----------------------------------------------------------------------


def decision(kind: str, stage: str, violations: list[str] | None = None) -> PolicyDecision:
    return PolicyDecision(
        decision=kind, violations=violations or [], bundle_digest="sha256:b", stage=stage,
        evaluated_at=AT, sha256="c" * 64,
    )  # fmt: skip


def test_a_gate_records_approvals_decisions_and_stage_moves_once() -> None:
    before = ModelStatus(sha256="c" * 64, stage="staging", policy=decision("require_approval", "production"))  # fmt: skip
    approval = Approval(user="bob", stage="production", at=AT, sha256="c" * 64)
    after = before.model_copy(
        update={
            "approvals": [approval],
            "policy": decision("allow", "production"),
            "stage": "production",
        }  # fmt: skip
    )
    records = audit.gate_records(MODEL, before, after, "operator")
    assert [(r.kind, r.actor) for r in records] == [
        ("approval", "bob"), ("policy", "operator"), ("promotion", "operator"),
    ]  # fmt: skip
    assert records[2].details == {"from": "staging", "to": "production", "digest": "c" * 64, "decision": "allow"}  # fmt: skip
    assert audit.gate_records(MODEL, after, after.model_copy(), "operator") == []
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.make_entry(1, audit.GENESIS, audit.Record("vibes", "x", MODEL), AT)
    glass = audit.make_entry(1, audit.GENESIS, audit.Record("break-glass", "sre", MODEL), AT)
    assert glass["hash"] == audit.entry_hash(glass)


# --- the local control plane ------------------------------------------------------------------

SHA = "9f2c" * 16
# A house policy of its own, so that what is recorded does not follow the product's rules.
POLICY = """package aiml024.promotion

import rego.v1

default decision := "deny"

decision := "allow" if input.stage == "staging"

decision := "allow" if {
	input.stage == "production"
	count(input.approvals) > 0
}

decision := "require_approval" if {
	input.stage == "production"
	count(input.approvals) == 0
}

result := {"decision": decision, "violations": []}
"""


def hand_model():
    return parse_object({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model", "metadata": {"name": "churn-v1"},
        "spec": {"source": {"artifactUri": "file:///models/churn", "sha256": SHA},
                 "task": "classification"},
    })  # fmt: skip


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalControlPlane:
    """A local control plane on its own state directory ($AIML024_HOME, which the CLI reads)
    and its own pinned policy; alice is the user."""
    monkeypatch.setenv("AIML024_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("AIML024_USER", "alice")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "promotion.rego").write_text(POLICY)
    write_pin(tmp_path / "policies")
    return LocalControlPlane(tmp_path / "state", tmp_path / "policies")


def test_the_local_control_plane_audits_gating_promotion_and_approval(
    plane: LocalControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = plane.home
    plane.apply([hand_model()], Progress())  # staging is allowed
    plane.reconcile_model("churn-v1")  # the same decision again: nothing new
    assert plane.promote("churn-v1", "archived").status.policy.decision == "deny"  # type: ignore[union-attr]
    assert plane.promote("churn-v1", "production").status.stage == "staging"  # type: ignore[union-attr]
    monkeypatch.setenv("AIML024_USER", "bob")
    assert plane.approve("churn-v1", "production", "bob", "card read").status.stage == "production"  # type: ignore[union-attr]

    entries = audit.AuditLog(home.as_uri(), "default").entries()
    assert [(e["kind"], e["actor"]) for e in entries] == [
        ("policy", "alice"), ("promotion", "alice"), ("policy", "alice"), ("policy", "alice"),
        ("approval", "bob"), ("policy", "bob"), ("promotion", "bob"),
    ]  # fmt: skip
    decisions = [(e["details"]["stage"], e["details"]["decision"]) for e in entries if e["kind"] == "policy"]  # fmt: skip
    assert decisions == [
        ("staging", "allow"), ("archived", "deny"), ("production", "require_approval"),
        ("production", "allow"),
    ]  # fmt: skip
    assert entries[1]["details"] == {"from": "none", "to": "staging", "digest": SHA, "decision": "allow"}  # fmt: skip
    assert (
        entries[4]["details"]["digest"] == SHA and entries[4]["details"]["comment"] == "card read"
    )
    assert (
        entries[-1]["details"]["from"] == "staging" and entries[-1]["details"]["to"] == "production"
    )
    assert all(e["subject"] == {"kind": "Model", "namespace": "default", "name": "churn-v1"} for e in entries)  # fmt: skip

    # Mirrored as events: the newest names the head (seq:hash) that verify checks against.
    mirrored = [e for e in plane.store.events_for("Model", "churn-v1", limit=100) if e["reason"] == "AuditRecorded"]  # fmt: skip
    assert len(mirrored) == 7
    assert mirrored[-1]["message"] == f"audit entry 7:{entries[-1]['hash']} (promotion)"

    # The CLI reads this machine's state directory by default.
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0 and "default: 7 entries verified" in result.stdout
    listed = runner.invoke(app, ["audit", "log", "--kind", "approval"])
    assert (
        "bob    model/default/churn-v1  approved stage production of 9f2c9f2c9f2c: card read"
        in listed.stdout
    )
    approval = load(entry_file(home / "audit" / "default", 5))
    approval["actor"] = "carol"
    rewrite(entry_file(home / "audit" / "default", 5), approval)
    tampered = runner.invoke(app, ["audit", "verify"])
    assert tampered.exit_code == 1
    assert "error: default/000000000005.json: edited" in tampered.stderr


def test_on_one_machine_the_events_catch_the_newest_entries_deleted_with_the_head(
    plane: LocalControlPlane,
) -> None:
    """What the store alone cannot show (the newest entry deleted, the head object set back),
    the AuditRecorded events in the state directory still name."""
    plane.apply([hand_model()], Progress())  # entries 1 (policy) and 2 (promotion)
    directory = plane.home / "audit" / "default"
    entry_file(directory, 2).unlink()
    first = load(entry_file(directory, 1))
    rewrite(directory / "head.json", {"seq": 1, "hash": first["hash"], "at": first["at"]})
    assert audit.AuditLog(plane.home.as_uri(), "default").verify() == []

    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert one_error(result.stderr) == (
        "error: default/000000000002.json: missing: the newest AuditRecorded event names entry "
        "2 but the log ends at entry 1: the newest entries were deleted"
    )
    # The whole log deleted: the events still name its head.
    shutil.rmtree(plane.home / "audit")
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "the newest AuditRecorded event names entry 2 but the log is empty" in result.stderr
