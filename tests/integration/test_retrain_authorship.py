"""Four eyes through a drift monitor's retrain: whoever wrote the retrain instruction (the
Deployment's `retrain.dataUri`, the data the retrained Model learns from) authors that Model
and cannot approve it; nobody can write an author's name themselves.

Through the real operator and its webhooks on the emulated API server (test_operator's
fixtures), plus the pure pieces: the admission stamping and the retrain patch the operator
builds.
"""

# ruff: noqa: F811 - pytest injects the fixtures imported from test_operator by name

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
from tests.integration.emulator import ApiError, Emulator
from tests.integration.emulator.harness import SHA, STORE, OperatorThread, run_succeeds
from tests.integration.emulator.server import OPERATOR_USER
from tests.integration.test_operator import (  # noqa: F401 - fixtures, used by name
    api,
    as_user,
    experiment_manifest,
    ns,
    operator,
    train,
)

from aiml024.api import Deployment, Experiment
from aiml024.api.monitoring import DRIFT, DriftReport, FeatureDrift, monitor_root
from aiml024.operator import admission
from aiml024.operator.config import OperatorConfig
from aiml024.operator.monitors import authored_retrain_patch, retrain_author

APPLIED_BY = "aiml024.io/applied-by"
APPROVE = "aiml024.io/approve"
FRESH = "s3://data/churn-fresh.csv.gz"
MONITOR = "inputs"


def _deployment(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "churn", "annotations": annotations or {}},
        "spec": {
            "model": "churn-model-v1",
            "requireStage": "staging",
            "monitors": [{
                "name": MONITOR, "threshold": 0.25, "action": "retrain",
                "retrain": {"experiment": "churn", "dataUri": FRESH},
            }],
        },
    }  # fmt: skip


def _drifted_report(ns: str) -> None:
    """The monitor's CronWorkflow wrote a drifted report (only the platform writes there)."""
    until = datetime(2026, 3, 1, 14, tzinfo=UTC)
    report = DriftReport(
        deployment="churn", namespace=ns, monitor=MONITOR, model="churn-model-v1", sha256=SHA,
        method="psi", threshold=0.25, until=until, rows=500, score=0.41, drifted=True,
        features=[FeatureDrift(feature="tenure", kind="numeric", statistic="psi", score=0.41,
                               drifted=True)],
        message="tenure drifted",
    )  # fmt: skip
    folder = Path(monitor_root(str(STORE), ns, "churn")) / DRIFT / MONITOR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{until:%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(report.wire()))


def test_whoever_wrote_the_retrain_instruction_authors_the_retrained_model(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, bob, mallory = (as_user(api, u, ns) for u in ("alice", "bob", "mallory"))
    train(api, alice)
    _drifted_report(ns)
    # mallory points the monitor at data she chose (and tries to name bob as its author).
    created = mallory.create(_deployment({APPLIED_BY: "bob"}))
    assert created["metadata"]["annotations"][APPLIED_BY] == "mallory"

    # The operator's retrain patch names the Deployment's author, not the operator.
    exp = alice.wait_for(
        "Experiment", "churn", lambda e: e["spec"]["data"]["uri"] == FRESH, what="to retrain"
    )
    assert exp["metadata"]["annotations"][APPLIED_BY] == "mallory"
    assert exp["metadata"]["generation"] == 2
    alice.wait_for("Workflow", "churn-g2", lambda w: w is not None, what="to be created")
    run_succeeds(api, ns, "churn", "churn-g2")
    v2 = alice.wait_for("Model", "churn-model-v2", lambda m: m["status"]["policy"])
    assert v2["spec"]["owner"] == "mallory"
    assert alice.get("Model", "churn-model-v1")["spec"]["owner"] == "alice"

    api.bind(ns, "aiml024-approver", user="mallory")  # even holding the role
    with pytest.raises(ApiError) as own:
        mallory.annotate("Model", "churn-model-v2", APPROVE, "production")
    assert own.value.code == 403
    assert "mallory authored model churn-model-v2" in own.value.message
    approved = bob.annotate("Model", "churn-model-v2", APPROVE, "production")
    [record] = json.loads(approved["metadata"]["annotations"]["aiml024.io/approvals"])
    assert (record["user"], record["stage"], record["sha256"]) == ("bob", "production", SHA)


def test_nobody_writes_an_author_themselves(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    alice, mallory = as_user(api, "alice", ns), as_user(api, "mallory", ns)
    train(api, alice)
    # Experiment: a metadata-only change keeps the recorded author; a spec change makes the
    # requester the author, whatever name the request carries.
    forged = mallory.annotate("Experiment", "churn", APPLIED_BY, "bob")
    assert forged["metadata"]["annotations"][APPLIED_BY] == "alice"
    with_spec = mallory.patch("Experiment", "churn", {
        "metadata": {"annotations": {APPLIED_BY: "alice"}},
        "spec": {"search": {"trials": 10}},
    })  # fmt: skip
    assert with_spec["metadata"]["annotations"][APPLIED_BY] == "mallory"
    removed = mallory.annotate("Experiment", "churn", APPLIED_BY, None)
    assert removed["metadata"]["annotations"][APPLIED_BY] == "mallory"

    # Deployment: the same rule.
    alice.create(_deployment())
    assert alice.get("Deployment", "churn")["metadata"]["annotations"][APPLIED_BY] == "alice"
    forged = mallory.annotate("Deployment", "churn", APPLIED_BY, "bob")
    assert forged["metadata"]["annotations"][APPLIED_BY] == "alice"
    changed = mallory.patch("Deployment", "churn", {
        "metadata": {"annotations": {APPLIED_BY: "alice"}},
        "spec": {"monitors": [{
            "name": MONITOR, "threshold": 0.25, "action": "retrain",
            "retrain": {"experiment": "churn", "dataUri": "s3://data/mallory.csv.gz"},
        }]},
    })  # fmt: skip
    assert changed["metadata"]["annotations"][APPLIED_BY] == "mallory"


# --- the pure pieces ---------------------------------------------------------------------------

CONFIG = OperatorConfig(operator_user=OPERATOR_USER)


def _obj(spec: dict[str, Any], author: str | None = None) -> dict[str, Any]:
    annotations = {APPLIED_BY: author} if author is not None else {}
    return {"metadata": {"name": "churn", "annotations": annotations}, "spec": spec}


def _stamped(patch: kopf.Patch) -> Any:
    return patch.get("metadata", {}).get("annotations", {}).get(APPLIED_BY, "unchanged")


def test_stamp_experiment_takes_an_author_from_the_operator_only() -> None:
    old, new = {"data": {"uri": "s3://a"}}, {"data": {"uri": "s3://b"}}
    cases = [  # (requester, named in the request, spec changed) -> author
        ("mallory", "bob", True, "mallory"),
        ("mallory", "bob", False, "alice"),
        ("mallory", None, False, "alice"),  # removing it: put back
        (OPERATOR_USER, "bob", True, "bob"),  # the retrain instruction's author
        (OPERATOR_USER, OPERATOR_USER, True, "alice"),  # never the operator itself
        (OPERATOR_USER, None, True, "alice"),
        (OPERATOR_USER, "bob", False, "alice"),  # no spec change: nothing to author
    ]
    for user, named, changed, author in cases:
        patch = kopf.Patch()
        body = _obj(new if changed else old, named)
        admission.stamp_experiment(CONFIG, body, _obj(old, "alice"), user, patch)
        expected = "unchanged" if named == author else author
        assert _stamped(patch) == expected, (user, named, changed)


def test_stamp_experiment_removes_a_name_where_nobody_is_recorded() -> None:
    patch = kopf.Patch()
    old = _obj({"data": {"uri": "s3://a"}})  # stored before the webhook: no author
    admission.stamp_experiment(CONFIG, _obj(old["spec"], "bob"), old, "mallory", patch)
    assert _stamped(patch) is None
    patch = kopf.Patch()
    admission.stamp_experiment(CONFIG, _obj({"x": 1}, OPERATOR_USER), old, OPERATOR_USER, patch)
    assert _stamped(patch) is None


def test_stamp_deployment_records_who_last_changed_the_spec() -> None:
    old = _obj({"model": "a"}, "alice")
    for body, user, author in [
        (_obj({"model": "a"}, "bob"), "mallory", "alice"),
        (_obj({"model": "b"}, "bob"), "mallory", "mallory"),
        (_obj({"model": "b"}, "mallory"), "mallory", "unchanged"),
    ]:
        patch = kopf.Patch()
        admission.stamp_deployment(body, old, user, patch)
        assert _stamped(patch) == author
    patch = kopf.Patch()
    admission.stamp_deployment(_obj({"model": "a"}, "bob"), None, "carol", patch)  # CREATE
    assert _stamped(patch) == "carol"


def _models(dep_author: str | None, exp_author: str | None) -> tuple[Deployment, Experiment]:
    dep = Deployment.model_validate(_deployment({APPLIED_BY: dep_author} if dep_author else {}))
    manifest = experiment_manifest()
    manifest["metadata"]["annotations"] = {APPLIED_BY: exp_author} if exp_author else {}
    return dep, Experiment.model_validate(manifest)


def test_the_retrain_patch_names_the_retrain_instructions_author_never_the_operator() -> None:
    patch = {"spec": {"data": {"uri": FRESH}}}
    for dep_author, exp_author, author in [
        ("mallory", "alice", "mallory"),
        (None, "alice", "alice"),  # a Deployment stamped before the webhook
        (OPERATOR_USER, "alice", "alice"),
        (None, OPERATOR_USER, None),
        (None, None, None),
    ]:
        dep, exp = _models(dep_author, exp_author)
        assert retrain_author(dep, exp, OPERATOR_USER) == author
        built = authored_retrain_patch(patch, dep, exp, OPERATOR_USER)
        assert built["spec"] == patch["spec"]
        assert built.get("metadata", {}).get("annotations", {}).get(APPLIED_BY) == author
