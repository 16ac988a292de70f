"""The kopf operator against an emulated Kubernetes API: what a user sees with kubectl.

The real operator (kopf, its admission webhooks over HTTP) runs against tests/integration/
emulator, as its ServiceAccount under manifests/rbac.yaml's ClusterRole (the emulator enforces
RBAC); each test drives the Workflow and SeldonDeployment status the way Argo (its controller's
ServiceAccount and ClusterRole) and Seldon (a cluster admin here) would, in its own namespace,
where the people have what a real cluster would give them (see `ns`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from tests.integration.emulator import ApiError, Client, Emulator
from tests.integration.emulator.harness import (
    SHA,
    STORE,
    OperatorProcess,
    OperatorThread,
    free_port,
    operator_env,
    register_result,
    run_succeeds,
    wire_webhooks,
    workflow_status,
)
from tests.integration.emulator.server import ADMIN, ARGO_USER, OPERATOR_USER
from typer.testing import CliRunner

from aiml024 import audit
from aiml024.cli.main import app

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_PORT = free_port()
METRICS: dict[str, str] = {}  # "<namespace>/<deployment>/<predictor>" -> exposition text
# Read by the operator at startup (and the SLO timer's interval at import): set before it runs.
os.environ.update({"AIML024_SLO_INTERVAL": "0.3", "AIML024_RETRY_DELAY": "0.5"})


def _serve_metrics() -> str:
    """Stand-in for the predictors' /prometheus endpoints (no Prometheus configured)."""
    port = free_port()

    async def handler(request: web.Request) -> web.Response:
        text = METRICS.get(request.match_info["key"])
        return web.Response(text=text) if text else web.Response(status=404)

    def run() -> None:
        import asyncio

        app = web.Application()
        app.router.add_get("/{key:.*}", handler)
        asyncio.run(_run_app(app, port))

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{port}/{{namespace}}/{{deployment}}/{{predictor}}"


async def _run_app(app: web.Application, port: int) -> None:
    import asyncio

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    with Emulator() as emulator:
        wire_webhooks(emulator, WEBHOOK_PORT)
        env = operator_env(emulator, WEBHOOK_PORT, AIML024_METRICS_URL=_serve_metrics())
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield emulator
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def operator(api: Emulator) -> Iterator[OperatorThread]:
    running = OperatorThread().start()
    yield running
    running.stop()


@pytest.fixture
def ns(api: Emulator, request: pytest.FixtureRequest) -> str:
    """A namespace where alice, bob and mallory have the built-in `edit` role (which aggregates
    aiml024-editor and Argo's edit role) and bob is also an `aiml024-approver`."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:50].rstrip("-")
    Client(api.url, ADMIN).create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    for user in ("alice", "bob", "mallory"):
        api.bind(name, "edit", user=user)
    api.bind(name, "aiml024-approver", user="bob")
    return name


def as_user(api: Emulator, user: str, ns: str) -> Client:
    return Client(api.url, user, ns)


def argo(api: Emulator, ns: str) -> Client:
    """Argo's workflow controller (its ServiceAccount, bound to argo-cluster-role)."""
    return Client(api.url, ARGO_USER, ns)


def seldon(api: Emulator, ns: str) -> Client:
    """Seldon's controller; a cluster admin here (no Seldon roles are loaded), and the one who
    looks at what Seldon and Prometheus objects the operator made (`edit` cannot read them)."""
    return Client(api.url, ADMIN, ns)


def experiment_manifest(name: str = "churn", model: str = "churn-model") -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "churn" / "experiment.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["data"]["uri"] = "s3://data/churn.csv.gz"
    doc["spec"]["model"]["name"] = model
    return doc  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def reasons(client: Client, name: str, expected: set[str] | None = None) -> set[str]:
    """The reasons of the Events about `name`, once they include `expected` (kopf posts
    Events in the background, so they may trail the status by a moment)."""
    deadline = time.monotonic() + 5
    while True:
        seen = {e["reason"] for e in client.events(name)}
        if expected is None or expected <= seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def train(
    api: Emulator, alice: Client, name: str = "churn", model: str = "churn-model", auc: float = 0.86
) -> dict[str, Any]:
    """alice applies an Experiment; Argo runs it to success; the Model gets registered."""
    alice.create(experiment_manifest(name, model))
    alice.wait_for("Workflow", f"{name}-g1", lambda w: w is not None, what="to be created")
    run_succeeds(api, alice.namespace, name, f"{name}-g1", model=model, auc=auc)
    alice.wait_for(
        "Experiment",
        name,
        lambda e: e["status"]["modelName"] == f"{model}-v1",
        what="to register its model",
    )
    return alice.wait_for(
        "Model", f"{model}-v1", lambda m: m["status"]["policy"]["decision"], what="to be gated"
    )


# --- Experiment -------------------------------------------------------------------------------


def test_experiment_lifecycle(api: Emulator, operator: OperatorThread, ns: str) -> None:
    alice = as_user(api, "alice", ns)
    created = alice.create(experiment_manifest())
    assert created["metadata"]["annotations"]["aiml024.io/applied-by"] == "alice"

    wf = alice.wait_for("Workflow", "churn-g1", lambda w: w is not None, what="to be created")
    owner = wf["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Experiment",
        "churn",
        created["metadata"]["uid"],
    )
    assert wf["metadata"]["labels"]["aiml024.io/experiment"] == "churn"

    # Argo starts it; the search step reports its trials as node progress.
    controller = argo(api, ns)
    controller.patch(
        "Workflow", "churn-g1", {"status": workflow_status("churn-g1", "Running", done=12)}
    )
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["trialsCompleted"] == 12)
    assert exp["status"]["phase"] == "Running"
    assert exp["status"]["trialsTotal"] == 40
    assert exp["status"]["observedGeneration"] == 1
    assert condition(exp, "Ready")["reason"] == "Training"
    since = condition(exp, "Ready")["lastTransitionTime"]
    time.sleep(1.1)  # timestamps have second precision
    controller.patch(
        "Workflow", "churn-g1", {"status": workflow_status("churn-g1", "Running", done=30)}
    )
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["trialsCompleted"] == 30)
    assert condition(exp, "Ready")["lastTransitionTime"] == since, "kept while status is unchanged"

    run_succeeds(api, ns, "churn", "churn-g1")
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["modelName"])
    assert exp["status"]["phase"] == "Succeeded"
    assert exp["status"]["bestTrial"]["number"] == 17
    assert exp["status"]["leaderboard"][0]["name"] == "lightgbm"
    assert condition(exp, "Ready")["status"] == "True"

    model = alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["policy"])
    assert model["spec"]["owner"] == "alice", "the Experiment's author owns the model"
    assert model["status"]["sha256"] == SHA
    assert model["status"]["policy"]["decision"] == "allow"
    assert model["status"]["policy"]["bundleDigest"].startswith("sha256:")
    assert model["status"]["stage"] == "staging"
    events = {"WorkflowCreated", "Training", "ModelRegistered"}
    assert events <= reasons(alice, "churn", events)
    assert "PolicyAllowed" in reasons(alice, "churn-model-v1", {"PolicyAllowed"})

    # A spec change is a new generation: a new Workflow, the old one's outcome stays recorded.
    alice.patch("Experiment", "churn", {"spec": {"search": {"trials": 10}}})
    wf2 = alice.wait_for("Workflow", "churn-g2", lambda w: w is not None, what="to be created")
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["observedGeneration"] == 2)
    assert exp["status"]["workflowName"] == "churn-g2" and exp["status"]["trialsTotal"] == 10
    assert wf2["metadata"]["labels"]["aiml024.io/generation"] == "2"

    # Deleting the Experiment garbage-collects its Workflows; the registered Model stays.
    alice.delete("Experiment", "churn")
    alice.wait_for("Workflow", "churn-g1", lambda w: w is None, what="to be collected")
    alice.wait_for("Workflow", "churn-g2", lambda w: w is None, what="to be collected")
    assert alice.find("Model", "churn-model-v1") is not None


def test_failed_workflow_is_reported(api: Emulator, operator: OperatorThread, ns: str) -> None:
    alice = as_user(api, "alice", ns)
    alice.create(experiment_manifest())
    alice.wait_for("Workflow", "churn-g1", lambda w: w is not None)
    argo(api, ns).patch(
        "Workflow",
        "churn-g1",
        {"status": workflow_status("churn-g1", "Failed", failed_step="search")},
    )
    exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["phase"] == "Failed")
    assert exp["status"]["message"] == "step search failed: OOMKilled (exit code 137)"
    assert condition(exp, "Ready")["reason"] == "WorkflowFailed"
    assert "WorkflowFailed" in reasons(alice, "churn", {"WorkflowFailed"})
    assert alice.find("Model", "churn-model-v1") is None


def test_invalid_experiment_is_refused_by_admission(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """Refused before it is stored. The API server evaluates the CRD's CEL rules before it
    calls validating webhooks, so the CRD's rule answers (the webhook says the same)."""
    alice = as_user(api, "alice", ns)
    doc = experiment_manifest()
    doc["spec"]["objective"] = "minimize_rmse"  # a regression objective on a classification
    with pytest.raises(ApiError) as refused:
        alice.create(doc)
    assert refused.value.code == 422
    assert (
        'spec: Invalid value: "object": objective does not apply to classification'
        in refused.value.message
    )
    assert alice.find("Experiment", "churn") is None


def test_a_field_the_platform_does_not_do_yet_is_refused_by_admission(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """The CRD keeps the field (the schema can grow); the webhook refuses setting it."""
    alice = as_user(api, "alice", ns)
    doc = experiment_manifest()
    doc["spec"]["constraints"] = {"maxCostPerHour": 3.5}
    with pytest.raises(ApiError) as refused:
        alice.create(doc)
    assert refused.value.code == 422
    assert "not supported yet: spec.constraints.maxCostPerHour" in refused.value.message
    assert alice.find("Experiment", "churn") is None


def test_author_annotation_cannot_be_forged(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    mallory = as_user(api, "mallory", ns)
    doc = experiment_manifest()
    doc["metadata"]["annotations"] = {"aiml024.io/applied-by": "alice"}
    assert mallory.create(doc)["metadata"]["annotations"]["aiml024.io/applied-by"] == "mallory"
    patched = mallory.annotate("Experiment", "churn", "aiml024.io/applied-by", "alice")
    assert patched["metadata"]["annotations"]["aiml024.io/applied-by"] == "mallory"


# --- Model: policy and approvals ----------------------------------------------------------


def test_policy_denied_promotion(api: Emulator, operator: OperatorThread, ns: str) -> None:
    alice = as_user(api, "alice", ns)
    model = train(api, alice, auc=0.61)
    assert model["status"]["stage"] == "staging", "staging checks integrity only"

    with pytest.raises(ApiError) as refused:
        alice.patch("Model", "churn-model-v1", {"spec": {"stage": "production"}})
    assert refused.value.code == 403
    assert "metric_below_threshold: auc 0.61 < 0.7" in refused.value.message
    assert alice.get("Model", "churn-model-v1")["spec"]["stage"] == "staging"


def test_approval_needs_four_eyes(api: Emulator, operator: OperatorThread, ns: str) -> None:
    alice, bob = as_user(api, "alice", ns), as_user(api, "bob", ns)
    api.bind(ns, "aiml024-approver", user="alice")  # an approver too: still not of her own model
    train(api, alice)
    alice.patch("Model", "churn-model-v1", {"spec": {"stage": "production"}})
    model = alice.wait_for(
        "Model", "churn-model-v1", lambda m: m["status"]["phase"] == "PendingApproval"
    )
    assert model["status"]["stage"] == "staging"
    assert model["status"]["policy"]["decision"] == "require_approval"

    with pytest.raises(ApiError) as refused:
        alice.annotate("Model", "churn-model-v1", "aiml024.io/approve", "production")
    assert refused.value.code == 403
    assert "alice authored model churn-model-v1 and cannot approve it" in refused.value.message

    with pytest.raises(ApiError) as forged:
        bob.annotate(
            "Model",
            "churn-model-v1",
            "aiml024.io/approvals",
            '[{"user": "carol", "stage": "production", "at": "2026-01-01T00:00:00Z"}]',
        )
    assert forged.value.code == 403

    approved = bob.annotate("Model", "churn-model-v1", "aiml024.io/approve", "production")
    assert "aiml024.io/approve" not in approved["metadata"]["annotations"]
    assert '"user":"bob"' in approved["metadata"]["annotations"]["aiml024.io/approvals"]
    model = bob.wait_for("Model", "churn-model-v1", lambda m: m["status"]["stage"] == "production")
    assert [a["user"] for a in model["status"]["approvals"]] == ["bob"]
    assert model["status"]["policy"]["decision"] == "allow"
    assert "Promoted" in reasons(bob, "churn-model-v1", {"Promoted"})


def test_decisions_are_audited_in_the_artifact_store(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """Each decision is an entry in the namespace's hash chain in the artifact store, mirrored
    as an Event; `aiml024 audit verify --store` checks the chain and names an edited entry."""
    alice, bob = as_user(api, "alice", ns), as_user(api, "bob", ns)
    train(api, alice)
    alice.patch("Model", "churn-model-v1", {"spec": {"stage": "production"}})
    alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["phase"] == "PendingApproval")
    bob.annotate("Model", "churn-model-v1", "aiml024.io/approve", "production")
    bob.wait_for("Model", "churn-model-v1", lambda m: m["status"]["stage"] == "production")

    log = audit.AuditLog(STORE.as_uri(), ns)
    deadline = time.monotonic() + 5
    while len(log.entries()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = log.entries()
    assert [(e["kind"], e["actor"]) for e in entries] == [
        ("policy", OPERATOR_USER),
        ("promotion", OPERATOR_USER),
        ("policy", OPERATOR_USER),
        ("approval", "bob"),
        ("policy", OPERATOR_USER),
        ("promotion", OPERATOR_USER),
    ]
    assert entries[2]["details"]["decision"] == "require_approval"
    assert entries[3]["details"]["digest"] == SHA and entries[5]["details"]["to"] == "production"
    assert entries[0]["subject"] == {"kind": "Model", "namespace": ns, "name": "churn-model-v1"}
    head = f"audit entry 6:{entries[5]['hash']} (promotion)"
    deadline = time.monotonic() + 5
    while head not in {e["message"] for e in alice.events("churn-model-v1")}:
        assert time.monotonic() < deadline, "the newest entry is mirrored as an Event"
        time.sleep(0.05)

    runner = CliRunner()
    verified = runner.invoke(app, ["audit", "verify", "--store", STORE.as_uri(), "-n", ns])
    assert verified.exit_code == 0, verified.output
    assert f"{ns}: 6 entries verified" in verified.stdout
    edited = STORE / "audit" / ns / "000000000004.json"
    entry = json.loads(edited.read_text())
    entry["actor"] = "mallory"
    edited.chmod(0o644)
    edited.write_text(json.dumps(entry))
    tampered = runner.invoke(app, ["audit", "verify", "--store", STORE.as_uri(), "-n", ns])
    assert tampered.exit_code == 1
    assert tampered.stderr.startswith(f"error: {ns}/000000000004.json: edited")


# --- Deployment: canary and SLO rollback ------------------------------------------------------


def _register_directly(api: Emulator, ns: str, name: str, sha: str) -> None:
    """A registered Model as the operator leaves it (created by the operator's account), with
    the evidence staging needs; the operator then gates it to staging."""
    registry = as_user(api, OPERATOR_USER, ns)
    lineage = register_result("churn", "churn-g1")["model"]["status"]["lineage"]
    registry.create(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Model",
            "metadata": {"name": name},
            "spec": {
                "source": {"artifactUri": f"s3://models/{name}", "sha256": sha},
                "task": "classification",
                "owner": "alice",
            },
        }
    )
    registry.patch(
        "Model",
        name,
        {"status": {"artifactUri": f"s3://models/{name}", "sha256": sha, "lineage": lineage}},
        sub="status",
    )
    as_user(api, "alice", ns).wait_for(
        "Model", name, lambda m: m["status"]["stage"] == "staging", what="to reach staging"
    )


def _exposition(p95_seconds: float, errors: int = 0) -> str:
    metric = "seldon_api_executor_server_requests_seconds"
    lines = [
        f'{metric}_bucket{{le="{le}"}} {n}'
        for le, n in ((0.05, 0), (0.1, 10 if p95_seconds > 0.1 else 100), (0.5, 100), ("+Inf", 100))
    ]
    lines += [
        f'{metric}_count{{code="200"}} {100 - errors}',
        f'{metric}_count{{code="500"}} {errors}',
    ]
    return "\n".join(lines) + "\n"


def test_canary_rolls_back_on_slo_breach(api: Emulator, operator: OperatorThread, ns: str) -> None:
    alice = as_user(api, "alice", ns)
    _register_directly(api, ns, "churn-v1", "a" * 64)
    _register_directly(api, ns, "churn-v2", "b" * 64)
    alice.create(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Deployment",
            "metadata": {"name": "churn"},
            "spec": {
                "model": "churn-v1",
                "requireStage": "staging",
                "strategy": {"type": "canary", "canary": {"model": "churn-v2", "weight": 20}},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
                "slo": {"latencyP95Ms": 150, "errorRate": 0.01},
            },
        }
    )
    cluster = seldon(api, ns)
    sdep = cluster.wait_for("SeldonDeployment", "churn", lambda s: s is not None)
    assert [(p["name"], p["traffic"]) for p in sdep["spec"]["predictors"]] == [
        ("stable", 80),
        ("canary", 20),
    ]
    assert sdep["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]["maxReplicas"] == 4
    cluster.wait_for("ServiceMonitor", "churn", lambda o: o is not None)
    rule = cluster.wait_for("PrometheusRule", "churn-slo", lambda o: o is not None)
    assert rule["metadata"]["ownerReferences"][0]["name"] == "churn"
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["phase"] == "Pending")

    # Seldon brings it up; both predictors are healthy at first.
    METRICS[f"{ns}/churn/stable"] = METRICS[f"{ns}/churn/canary"] = _exposition(0.05)
    cluster.patch(
        "SeldonDeployment",
        "churn",
        {
            "status": {
                "state": "Available",
                "address": {"url": f"http://churn-default.{ns}.svc:8000/api/v1.0/predictions"},
            }
        },
        sub="status",
    )
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["phase"] == "Serving")
    assert dep["status"]["traffic"] == {"stable": 80, "canary": 20}
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["sloState"] == "Met")

    # The canary slows down past the SLO: traffic goes back to stable.
    METRICS[f"{ns}/churn/canary"] = _exposition(0.4)
    sdep = cluster.wait_for(
        "SeldonDeployment",
        "churn",
        lambda s: s["spec"]["predictors"][1]["traffic"] == 0,
        what="rollback",
    )
    assert sdep["spec"]["predictors"][0]["traffic"] == 100
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["traffic"]["canary"] == 0)
    assert dep["status"]["sloState"] == "Breached"
    assert "canary p95 latency" in dep["status"]["lastRollback"]["reason"]
    assert condition(dep, "RolledBack")["status"] == "True"
    assert "RolledBack" in reasons(alice, "churn", {"RolledBack"})

    # Deleting the Deployment collects what it compiled to.
    alice.delete("Deployment", "churn")
    for kind, name in (
        ("SeldonDeployment", "churn"),
        ("ServiceMonitor", "churn"),
        ("PrometheusRule", "churn-slo"),
    ):
        cluster.wait_for(kind, name, lambda o: o is None, what="to be collected")


def test_canary_walks_its_steps_and_is_promoted(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """Each step holds its pause with the SLO met, then the next weight; after the last the
    candidate alone serves, as the stable predictor, and the promotion is audited."""
    alice = as_user(api, "alice", ns)
    _register_directly(api, ns, "churn-v1", "a" * 64)
    _register_directly(api, ns, "churn-v2", "b" * 64)
    steps = [{"weight": 10, "pauseSeconds": 1}, {"weight": 50, "pauseSeconds": 1}]
    alice.create(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Deployment",
            "metadata": {"name": "churn"},
            "spec": {
                "model": "churn-v1",
                "requireStage": "staging",
                "strategy": {"type": "canary", "canary": {"model": "churn-v2", "steps": steps}},
                "slo": {"latencyP95Ms": 150, "errorRate": 0.01},
            },
        }
    )
    cluster = seldon(api, ns)
    sdep = cluster.wait_for("SeldonDeployment", "churn", lambda s: s is not None)
    assert [(p["name"], p["traffic"]) for p in sdep["spec"]["predictors"]] == [
        ("stable", 90),
        ("canary", 10),
    ]
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"].get("rollout"))
    assert dep["status"]["rollout"]["phase"] == "Progressing"
    assert (dep["status"]["rollout"]["step"], dep["status"]["rollout"]["weight"]) == (0, 10)

    METRICS[f"{ns}/churn/stable"] = METRICS[f"{ns}/churn/canary"] = _exposition(0.05)
    cluster.patch("SeldonDeployment", "churn", {"status": {"state": "Available"}}, sub="status")
    cluster.wait_for(
        "SeldonDeployment",
        "churn",
        lambda s: [p.get("traffic") for p in s["spec"]["predictors"]] == [50, 50],
        what="the second step",
    )
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["rollout"]["step"] == 1)
    assert dep["status"]["traffic"] == {"stable": 50, "canary": 50}
    sdep = cluster.wait_for(
        "SeldonDeployment",
        "churn",
        lambda s: len(s["spec"]["predictors"]) == 1,
        what="the promotion",
        timeout=15,
    )
    [stable] = sdep["spec"]["predictors"]
    assert (stable["name"], stable["traffic"], stable["labels"]["aiml024.io/model"]) == (
        "stable",
        100,
        "churn-v2",
    )
    dep = alice.wait_for(
        "Deployment", "churn", lambda d: d["status"]["rollout"]["phase"] == "Promoted"
    )
    dep = alice.wait_for("Deployment", "churn", lambda d: d["status"]["traffic"] == {"stable": 100})
    assert dep["status"]["models"] == {"stable": "b" * 64}
    assert dep["status"]["rollout"]["weight"] == 100
    assert {"RolloutStep", "Promoted"} <= reasons(alice, "churn", {"RolloutStep", "Promoted"})
    log = audit.AuditLog(STORE.as_uri(), ns)
    deadline = time.monotonic() + 5
    while not any(e["kind"] == "rollout" for e in log.entries()):
        assert time.monotonic() < deadline, "the promotion is audited"
        time.sleep(0.05)
    [entry] = [e for e in log.entries() if e["kind"] == "rollout"]
    assert entry["actor"] == OPERATOR_USER and entry["details"]["phase"] == "Promoted"
    assert entry["details"]["candidate"] == "churn-v2"
    assert entry["details"]["to"] == {"stable": 100}


# --- restarts -------------------------------------------------------------------------------


def test_operator_killed_mid_run_recovers(api: Emulator, ns: str, tmp_path: Path) -> None:
    alice = as_user(api, "alice", ns)
    env = dict(os.environ)
    process = OperatorProcess(
        {k: v for k, v in env.items() if k.startswith("AIML024_")}, tmp_path / "operator.log"
    ).start()
    try:
        alice.create(experiment_manifest())
        alice.wait_for("Workflow", "churn-g1", lambda w: w is not None, timeout=30)
        argo(api, ns).patch(
            "Workflow", "churn-g1", {"status": workflow_status("churn-g1", "Running", done=5)}
        )
        alice.wait_for("Experiment", "churn", lambda e: e["status"]["trialsCompleted"] == 5)
    finally:
        process.kill()  # SIGKILL: no cleanup, no goodbye

    # While it is down, Argo finishes the run.
    run_succeeds(api, ns, "churn", "churn-g1")
    restarted = OperatorThread().start()
    try:
        exp = alice.wait_for("Experiment", "churn", lambda e: e["status"]["modelName"])
        assert exp["status"]["phase"] == "Succeeded"
        assert [w["metadata"]["name"] for w in alice.list("Workflow")] == ["churn-g1"]
        model = alice.wait_for("Model", "churn-model-v1", lambda m: m["status"]["policy"])
        assert model["status"]["stage"] == "staging"
    finally:
        restarted.stop()


# --- least privilege ------------------------------------------------------------------------


def test_operator_needs_nothing_beyond_its_cluster_role(
    api: Emulator, operator: OperatorThread, ns: str
) -> None:
    """The emulator enforces RBAC and the operator runs as its ServiceAccount, bound only to
    the ClusterRole in manifests/rbac.yaml: none of its requests (in this module's scenarios)
    was refused, and that role is all it had."""
    train(api, as_user(api, "alice", ns))
    used = {(verb, group, res) for user, verb, group, res in api.audit if user == OPERATOR_USER}
    assert ("create", "argoproj.io", "workflows") in used
    assert [d for d in api.denied if d[0] == OPERATOR_USER] == []
    operator_user = api.authenticate(OPERATOR_USER)
    bindings = api.call(
        lambda: dict(api.store[("rbac.authorization.k8s.io", "clusterrolebindings")])
    )
    held = {
        b["roleRef"]["name"]
        for b in bindings.values()
        if any(
            s.get("kind") == "ServiceAccount"
            and f"system:serviceaccount:{s.get('namespace')}:{s['name']}" == operator_user.name
            for s in b.get("subjects") or []
        )
    }
    assert held == {"aiml024-operator"}
