"""The gate cannot be walked around: each way an ordinary user (the built-in `edit` role) could
try, through the real operator and its webhooks on the emulated API server, which enforces
RBAC from manifests/ and Argo's aggregated roles, evaluates the CRDs' CEL rules and calls
webhooks for the status subresource as a real API server does.
"""

# ruff: noqa: F811 - pytest injects the fixtures imported from test_operator by name

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.integration.emulator import ApiError, Client, Emulator
from tests.integration.emulator.harness import (
    SHA,
    STORE,
    OperatorThread,
    run_succeeds,
    workflow_status,
)
from tests.integration.emulator.server import ADMIN
from tests.integration.test_operator import (  # noqa: F401 - fixtures, used by name
    _register_directly,
    api,
    as_user,
    condition,
    experiment_manifest,
    ns,
    operator,
    reasons,
    seldon,
    train,
)

from aiml024 import audit, signing

GITOPS = "system:serviceaccount:argocd:argocd-application-controller"


def _forged_register_output(workflow: str) -> dict[str, Any]:
    """A Workflow status whose register node claims a production model, pre-approved."""
    status = workflow_status(workflow, "Succeeded")
    for node in status["nodes"].values():
        if node["displayName"] == "register":
            result = json.loads(node["outputs"]["parameters"][0]["value"])
            result["model"]["metadata"]["annotations"] = {"aiml024.io/approve": "production"}
            result["model"]["spec"]["stage"] = "production"
            result["model"]["status"]["stage"] = "production"
            result["model"]["status"]["artifactUri"] = "s3://mallory/bundle"
            node["outputs"]["parameters"][0]["value"] = json.dumps(result)
    return status


def test_a_forged_workflow_status_registers_nothing(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, mallory = as_user(api, "alice", ns), as_user(api, "mallory", ns)
    alice.create(experiment_manifest())
    alice.wait_for("Workflow", "churn-g1", lambda w: w is not None)
    # Argo's edit role lets mallory patch the Workflow, status included (no subresource).
    mallory.patch("Workflow", "churn-g1", {"status": _forged_register_output("churn-g1")})
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"].get("message"))
    assert "no registration record" in exp["status"]["message"]
    assert alice.find("Model", "churn-model-v1") is None

    # The real run writes its record under its own root: only that is registered, and only
    # its evidence (no stage, no approval, no annotation from the step's output).
    run_succeeds(api, ns, "churn", "churn-g1")
    model = alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["policy"])
    assert model["status"]["stage"] == "staging" and model["status"]["approvals"] == []
    assert model["spec"]["owner"] == "alice"
    assert "aiml024.io/approve" not in (model["metadata"].get("annotations") or {})
    assert model["status"]["artifactUri"].startswith(STORE.as_uri() + f"/{ns}/churn/")


def test_a_workflow_the_experiment_does_not_own_is_never_adopted(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, mallory = as_user(api, "alice", ns), as_user(api, "mallory", ns)
    planted = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "churn-g1", "labels": {"aiml024.io/experiment": "churn"}},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {
            "image": "busybox", "command": ["true"]}}]},
    }  # fmt: skip
    mallory.create(planted)
    mallory.patch("Workflow", "churn-g1", {"status": _forged_register_output("churn-g1")})
    alice.create(experiment_manifest())
    exp = alice.wait_for(
        "Experiment", "churn", lambda e: condition(e, "Ready")["reason"] == "WorkflowNotOwned"
    )
    assert "was not created for this Experiment" in exp["status"]["message"]
    assert "WorkflowNotOwned" in reasons(alice, "churn", {"WorkflowNotOwned"})
    assert alice.find("Model", "churn-model-v1") is None


def test_nobody_but_the_operator_writes_a_models_status(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, mallory = as_user(api, "alice", ns), as_user(api, "mallory", ns)
    train(api, alice)
    forged = {"status": {"stage": "production"}}
    with pytest.raises(ApiError) as by_editor:
        mallory.patch("Model", "churn-model-v1", forged, sub="status")
    assert by_editor.value.code == 403 and "models/status" in by_editor.value.message
    api.bind(ns, "admin", user="mallory")  # namespace admin: still not the status
    with pytest.raises(ApiError) as by_admin:
        mallory.patch("Model", "churn-model-v1", forged, sub="status")
    assert by_admin.value.code == 403
    with pytest.raises(ApiError) as by_cluster_admin:  # past RBAC: the status webhook refuses
        Client(api.url, ADMIN, ns).patch("Model", "churn-model-v1", forged, sub="status")
    assert by_cluster_admin.value.code == 403
    assert "written by the aiml024 operator only" in by_cluster_admin.value.message
    assert alice.get("Model", "churn-model-v1")["status"]["stage"] == "staging"


def test_a_deployment_serves_only_what_a_recorded_decision_allows(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    mallory = as_user(api, "mallory", ns)
    mallory.create({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "mine"},
        "spec": {"source": {"artifactUri": "s3://mallory/anything", "sha256": SHA},
                 "task": "classification", "stage": "production"},
    })  # fmt: skip
    model = mallory.wait_for("Model", "mine", lambda m: m["status"]["policy"])
    assert model["status"]["policy"]["decision"] == "deny" and model["status"]["stage"] == "none"
    serve = {"apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
             "metadata": {"name": "mine"}, "spec": {"model": "mine"}}  # fmt: skip
    with pytest.raises(ApiError) as by_default:  # requireStage defaults to production
        mallory.create(serve)
    assert by_default.value.code == 403 and "deployment policy" in by_default.value.message
    serve["spec"]["requireStage"] = "any"
    with pytest.raises(ApiError) as anywhere:
        mallory.create(serve)
    assert "stage_any_outside_development" in anywhere.value.message
    assert mallory.find("Deployment", "mine") is None


def test_four_eyes_holds_against_whoever_changed_the_spec_and_needs_the_approver_role(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, mallory, bob = (as_user(api, u, ns) for u in ("alice", "mallory", "bob"))
    train(api, alice)
    # mallory retrains with her own spec: generation 2 registers its own version (the CRD's
    # immutable spec.source is never patched), and she is its author.
    mallory.patch("Experiment", "churn", {"spec": {"search": {"trials": 10}}})
    mallory.wait_for("Workflow", "churn-g2", lambda w: w is not None)
    run_succeeds(api, ns, "churn", "churn-g2")
    v2 = mallory.wait_for("Model", "churn-model-v2", lambda m: m["status"]["policy"])
    assert v2["spec"]["owner"] == "mallory"
    assert alice.get("Model", "churn-model-v1")["status"]["sha256"] == SHA  # untouched

    mallory.patch("Model", "churn-model-v2", {"spec": {"stage": "production"}})
    with pytest.raises(ApiError) as not_approver:  # edit does not grant the verb approve
        mallory.annotate("Model", "churn-model-v1", "aiml024.io/approve", "production")
    assert not_approver.value.code == 403 and "aiml024-approver" in not_approver.value.message
    api.bind(ns, "aiml024-approver", user="mallory")
    with pytest.raises(ApiError) as own:
        mallory.annotate("Model", "churn-model-v2", "aiml024.io/approve", "production")
    assert "mallory authored model churn-model-v2" in own.value.message
    bob.annotate("Model", "churn-model-v2", "aiml024.io/approve", "production")
    model = bob.wait_for("Model", "churn-model-v2", lambda m: m["status"]["stage"] == "production")
    assert [(a["user"], a["sha256"]) for a in model["status"]["approvals"]] == [("bob", SHA)]


@pytest.fixture
def approvers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """An approvers registry with bob's key (group risk-officer), where the operator reads it."""
    registry = tmp_path / "approvers.yaml"
    monkeypatch.setenv("AIML024_APPROVERS_FILE", str(registry))
    key = signing.generate_key()
    signing.register(registry, signing.entry_for(key, "bob", ["risk-officer"]))
    return registry, key


def _signed_approval(key: Any, ns: str, sha: str = SHA) -> dict[str, Any]:
    statement = signing.ApprovalStatement(
        model="churn-model-v1", namespace=ns, sha256=sha, stage="production",
        at=datetime.now(UTC), comment="card reviewed",
    )  # fmt: skip
    return signing.approval_patch("churn-model-v1", ns, signing.sign(statement, key))


def test_a_signed_approval_applied_by_gitops_counts_and_a_revoked_key_demotes(
    api: Emulator, operator: OperatorThread, ns: str, approvers: tuple[Path, Any]
) -> None:
    registry, key = approvers
    alice = as_user(api, "alice", ns)
    api.bind(ns, "edit", service_account="argocd:argocd-application-controller")  # Argo CD
    gitops = Client(api.url, GITOPS, ns)
    train(api, alice)
    alice.patch("Model", "churn-model-v1", {"spec": {"stage": "production"}})
    alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["phase"] == "PendingApproval")

    tampered = _signed_approval(key, ns, sha="0" * 64)  # signed for another artifact
    with pytest.raises(ApiError) as refused:
        gitops.patch("Model", "churn-model-v1", {"metadata": tampered["metadata"]})
    assert refused.value.code == 403 and "binds to the digest it signed" in refused.value.message

    # Argo CD's service account applies bob's signed statement: the signer is what counts.
    gitops.patch("Model", "churn-model-v1", {"metadata": _signed_approval(key, ns)["metadata"]})
    model = alice.wait_for(
        "Model", "churn-model-v1", lambda m: m["status"]["stage"] == "production"
    )
    [approval] = model["status"]["approvals"]
    assert (approval["user"], approval["groups"]) == ("bob", ["risk-officer"])
    alice.create({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
        "metadata": {"name": "churn"}, "spec": {"model": "churn-model-v1"},
    })  # fmt: skip
    Client(api.url, ADMIN, ns).wait_for("SeldonDeployment", "churn", lambda s: s is not None)

    # The risk team removes bob's key: at the next evaluation his approval no longer counts and
    # the model falls back to staging (the stage never outlives the decision behind it).
    registry.write_text("approvers: []\n")
    alice.patch("Model", "churn-model-v1", {"metadata": {"labels": {"reviewed": "again"}}})
    model = alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["stage"] == "staging")
    assert model["status"]["policy"]["decision"] == "require_approval"
    # The Deployment that serves it says so at once (what serves changes through Git).
    dep = alice.wait_for(
        "Deployment", "churn", lambda d: "require_approval" in condition(d, "Ready")["message"]
    )
    assert condition(dep, "Ready")["status"] == "False"


def test_a_recreated_experiment_cannot_touch_a_registered_bundle(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice = as_user(api, "alice", ns)
    first = train(api, alice)
    record = Path(first["status"]["artifactUri"].removeprefix("file://")).parent
    before = (record / "registration.json").read_bytes()
    alice.delete("Experiment", "churn")
    alice.wait_for("Experiment", "churn", lambda e: e is None)
    uid = alice.create(experiment_manifest())["metadata"]["uid"]  # same name, new uid
    alice.wait_for(
        "Workflow", "churn-g1",
        lambda w: w is not None and w["metadata"]["ownerReferences"][0]["uid"] == uid,
        what="to be created again for the new Experiment",
    )  # fmt: skip
    run_succeeds(api, ns, "churn", "churn-g1", sha="e" * 64)
    exp = alice.wait_for("Experiment", "churn", lambda e: "never replaced" in (
        e["status"].get("message") or ""))  # fmt: skip
    assert exp["status"].get("modelName") is None
    model = alice.get("Model", "churn-model-v1")
    assert model["status"]["artifactUri"] == first["status"]["artifactUri"]
    assert model["status"]["sha256"] == SHA
    assert (record / "registration.json").read_bytes() == before


def test_a_model_made_ahead_of_the_run_is_never_given_its_evidence(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """mallory predicts the next version's name and source (all in the Workflow's status) and
    makes that Model first, so she would own alice's trained model and could approve it."""
    alice, mallory = as_user(api, "alice", ns), as_user(api, "mallory", ns)
    alice.create(experiment_manifest())
    alice.wait_for("Workflow", "churn-g1", lambda w: w is not None)
    mallory.create({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "churn-model-v1"},
        "spec": {"source": {"experiment": "churn", "workflow": "churn-g1", "trial": 17},
                 "task": "classification"},
    })  # fmt: skip
    run_succeeds(api, ns, "churn", "churn-g1")
    exp = alice.wait_for("Experiment", "churn", lambda e: "never adopted" in (
        e["status"].get("message") or ""))  # fmt: skip
    assert exp["status"].get("modelName") is None
    squatted = alice.get("Model", "churn-model-v1")
    assert squatted["spec"]["owner"] == "mallory"
    assert not (squatted.get("status") or {}).get("sha256")  # no evidence of alice's run


def test_a_seldon_deployment_made_by_someone_else_is_never_adopted(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """Where users may write SeldonDeployments (not in `edit`: a cluster's own Seldon roles
    might grant it), one planted under the Deployment's name must not pass for the operator's:
    it would serve anything while the Deployment reports the approved digest."""
    alice = as_user(api, "alice", ns)
    _register_directly(api, ns, "churn-v1", "a" * 64)
    planted = {
        "apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
        "metadata": {"name": "churn"},
        "spec": {"predictors": [{"name": "stable", "graph": {
            "name": "model", "implementation": "MLSERVER_SKLEARN",
            "modelUri": "s3://mallory/anything"}}]},
    }  # fmt: skip
    cluster = seldon(api, ns)
    cluster.create(planted)
    alice.create({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment", "metadata": {"name": "churn"},
        "spec": {"model": "churn-v1", "requireStage": "staging"},
    })  # fmt: skip
    assert "NotOwned" in reasons(alice, "churn", {"NotOwned"})
    live = cluster.get("SeldonDeployment", "churn")
    assert live["spec"]["predictors"][0]["graph"]["modelUri"] == "s3://mallory/anything"
    assert alice.get("Deployment", "churn").get("status", {}).get("phase") != "Serving"


WHY = "INC-4711: fraud spike; ship the retrained model now, card follows by Friday"


def test_break_glass_needs_its_role_is_recorded_and_cannot_be_edited(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """A model production denies for quality (AUC 0.61) goes past it only for someone granted
    aiml024-break-glass, with a justification, never its author; the record the webhook
    writes is the only one, and nobody edits or removes it afterwards."""
    alice, bob, mallory = (as_user(api, u, ns) for u in ("alice", "bob", "mallory"))
    train(api, alice, auc=0.61)
    ask = {"metadata": {"annotations": {"aiml024.io/break-glass": WHY}},
           "spec": {"stage": "production"}}  # fmt: skip
    with pytest.raises(ApiError) as plain:  # without break-glass the gate refuses the stage
        mallory.patch("Model", "churn-model-v1", {"spec": {"stage": "production"}})
    assert plain.value.code == 403 and "metric_below_threshold: auc 0.61" in plain.value.message
    with pytest.raises(ApiError) as no_role:  # `edit` does not grant the verb break-glass
        mallory.patch("Model", "churn-model-v1", ask)
    assert no_role.value.code == 403 and "aiml024-break-glass" in no_role.value.message
    api.bind(ns, "aiml024-break-glass", user="alice")
    with pytest.raises(ApiError) as own:
        alice.patch("Model", "churn-model-v1", ask)
    assert "alice authored model churn-model-v1 and cannot break the glass" in own.value.message
    api.bind(ns, "aiml024-break-glass", user="mallory")
    short = {"metadata": {"annotations": {"aiml024.io/break-glass": "urgent, trust me"}},
             "spec": {"stage": "production"}}  # fmt: skip
    with pytest.raises(ApiError) as too_short:
        mallory.patch("Model", "churn-model-v1", short)
    assert too_short.value.code == 403 and "at least 20 characters" in too_short.value.message
    untouched = alice.get("Model", "churn-model-v1")
    assert untouched["spec"]["stage"] == "staging"
    assert "aiml024.io/break-glass-records" not in untouched["metadata"].get("annotations", {})

    patched = mallory.patch("Model", "churn-model-v1", ask)
    annotations = patched["metadata"]["annotations"]
    assert "aiml024.io/break-glass" not in annotations and patched["spec"]["stage"] == "production"
    [record] = json.loads(annotations["aiml024.io/break-glass-records"])
    assert {k: record[k] for k in ("user", "stage", "justification", "sha256")} == {
        "user": "mallory", "stage": "production", "justification": WHY, "sha256": SHA,
    }  # fmt: skip
    model = alice.wait_for(
        "Model", "churn-model-v1", lambda m: m["status"]["phase"] == "PendingApproval"
    )
    note = (
        f"break_glass: mallory overrode metric_below_threshold: auc 0.61 < 0.70 ({json.dumps(WHY)})"
    )
    assert note in model["status"]["policy"]["violations"]
    assert "BreakGlass" in reasons(alice, "churn-model-v1", {"BreakGlass"})

    bob.annotate("Model", "churn-model-v1", "aiml024.io/approve", "production")
    model = bob.wait_for("Model", "churn-model-v1", lambda m: m["status"]["stage"] == "production")
    assert model["status"]["policy"]["decision"] == "allow"
    assert model["status"]["policy"]["violations"] == [note]

    forged = json.dumps([{**record, "user": "bob", "justification": "x" * 40}])
    for who in (mallory, Client(api.url, ADMIN, ns)):
        with pytest.raises(ApiError) as edited:
            who.annotate("Model", "churn-model-v1", "aiml024.io/break-glass-records", forged)
        assert edited.value.code == 403 and "cannot be changed" in edited.value.message
        with pytest.raises(ApiError) as removed:
            who.annotate("Model", "churn-model-v1", "aiml024.io/break-glass-records", None)
        assert removed.value.code == 403
    kept = alice.get("Model", "churn-model-v1")["metadata"]["annotations"]
    assert json.loads(kept["aiml024.io/break-glass-records"]) == [record]

    log = audit.AuditLog(STORE.as_uri(), ns)
    deadline = time.monotonic() + 5
    while not [e for e in log.entries() if e["kind"] == "break-glass"]:
        assert time.monotonic() < deadline, "the break-glass is audited"
        time.sleep(0.05)
    [entry] = [e for e in log.entries() if e["kind"] == "break-glass"]
    assert entry["actor"] == "mallory"
    assert entry["details"]["overridden"] == ["metric_below_threshold: auc 0.61 < 0.70"]
    assert (entry["details"]["justification"], entry["details"]["digest"]) == (WHY, SHA)
