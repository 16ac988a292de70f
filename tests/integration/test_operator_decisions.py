"""The operator's own pure decisions (SLO breach, metrics parsing, approvals) and its policy
gate against an OPA server: fail closed on errors and timeouts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.integration.emulator.harness import SHA, free_port, register_result

from aiml024.api import Deployment, Model
from aiml024.api.deployment import Slo
from aiml024.api.plan import traffic
from aiml024.operator import slo
from aiml024.operator.config import OperatorConfig
from aiml024.operator.policy import gate
from aiml024.policy import load_bundle
from aiml024.reconcile import approvals as approval_rules
from aiml024.reconcile.workflow import search_progress

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _model(owner: str = "alice", annotations: dict[str, str] | None = None) -> Model:
    manifest = register_result("churn", "churn-g1")["model"]
    manifest["spec"]["owner"] = owner
    manifest["metadata"]["annotations"] = annotations or {}
    return Model.model_validate(manifest)


# --- SLO -------------------------------------------------------------------------------------


def test_a_slow_canary_breaches_and_a_healthy_one_does_not() -> None:
    objective = Slo(latency_p95_ms=150, error_rate=0.01)
    split = {"stable": 90, "canary": 10}
    slow = {"canary": slo.Observation(latency_p95_ms=420, error_rate=0.0)}
    breach = slo.slo_breach(objective, split, slow)
    assert breach is not None and "canary p95 latency 420 ms" in breach.reason
    assert slo.slo_breach(objective, split, {"canary": slo.Observation(80, 0.002)}) is None
    failing = {"canary": slo.Observation(80, 0.2)}
    assert "error rate 0.2" in slo.slo_breach(objective, split, failing).reason  # type: ignore[union-attr]


def test_no_rollback_without_canary_traffic_or_when_disabled() -> None:
    slow = {"canary": slo.Observation(latency_p95_ms=420)}
    assert slo.slo_breach(Slo(), {"stable": 100, "canary": 0}, slow) is None
    assert slo.slo_breach(Slo(rollback=False), {"stable": 90, "canary": 10}, slow) is None
    # A slow stable is not the canary's fault: rolling back would not help.
    assert (
        slo.slo_breach(
            Slo(), {"stable": 90, "canary": 10}, {"stable": slo.Observation(latency_p95_ms=900)}
        )
        is None
    )


def test_rollback_is_recorded_and_kept_for_the_generation() -> None:
    dep = Deployment.model_validate(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Deployment",
            "metadata": {"name": "churn", "generation": 3},
            "spec": {"model": "a", "strategy": {"type": "canary", "canary": {"model": "b"}}},
            "status": {"traffic": {"stable": 90, "canary": 10}},
        }
    )
    breach = slo.Breach("canary", "canary p95 latency 420 ms is above the SLO of 150 ms")
    status = slo.status_after_slo(dep, dep.status, breach, {}, NOW)  # type: ignore[arg-type]
    assert status.traffic == {"stable": 100, "canary": 0}
    assert status.slo_state == "Breached" and status.last_rollback is not None
    dep.status = status
    assert slo.rolled_back(dep)
    dep.metadata.generation = 4  # a new spec (e.g. a fixed canary) tries again
    assert not slo.rolled_back(dep)


def test_rollback_patch_moves_traffic_to_the_rolled_back_plan_only_if_unchanged() -> None:
    dep = Deployment.model_validate(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Deployment",
            "metadata": {"name": "churn"},
            "spec": {"model": "a", "strategy": {"type": "canary", "canary": {"model": "b"}}},
        }
    )
    seldon = {
        "metadata": {"resourceVersion": "42"},
        "spec": {
            "predictors": [
                {"name": "stable", "traffic": 90},
                {"name": "canary", "traffic": 10},
                {"name": "shadow", "shadow": True},
            ]
        },
    }
    ops = slo.traffic_patch(seldon, traffic(dep, rolled_back=True))
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert [(op["path"], op["value"]) for op in ops[1:]] == [
        ("/spec/predictors/0/traffic", 100),
        ("/spec/predictors/1/traffic", 0),
    ]


def test_api_errors_keep_their_meaning_through_the_client() -> None:
    """kubernetes_asyncio's ApiException becomes NotFound, AlreadyExists or Conflict."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from aiml024.operator import kube

    def answered(code: int, reason: str) -> kube.ApiError:
        error = ApiException(status=code, reason="HTTP reason")
        error.body = json.dumps({"kind": "Status", "reason": reason, "message": "why"}).encode()
        return kube._error(error)

    assert type(answered(404, "NotFound")) is kube.NotFound
    assert type(answered(409, "AlreadyExists")) is kube.AlreadyExists
    stale = answered(409, "Conflict")
    assert type(stale) is kube.Conflict and stale.message == "why"
    assert type(answered(403, "Forbidden")) is kube.ApiError
    bare = kube._error(ApiException(status=500, reason="Internal Server Error"))
    assert (bare.code, bare.reason) == (500, "Internal Server Error")


def test_the_client_sends_the_connections_bearer_token(tmp_path: Path) -> None:
    """A token file (the service account's) is re-read as it rotates."""
    from aiml024.operator.kube import Connection

    token = tmp_path / "token"
    token.write_text("first\n")
    connection = Connection(server="https://api.example:6443", token_path=token)
    config = connection.configuration()
    assert config.host == "https://api.example:6443" and config.verify_ssl

    async def bearer() -> str:
        return str(await config.get_api_key_with_prefix("BearerToken"))

    assert asyncio.run(bearer()) == "Bearer first"
    token.write_text("second\n")
    connection._token_read_at = 0.0  # as if a minute passed
    assert asyncio.run(bearer()) == "Bearer second"
    plain = Connection(server="http://127.0.0.1:1", token="alice", insecure=True).configuration()
    assert not plain.verify_ssl and plain.api_key == {"BearerToken": "alice"}


def test_observations_from_prometheus_and_from_exposition_text() -> None:
    answers = {
        "latency_p95_ms": {
            "status": "success",
            "data": {
                "result": [
                    {"metric": {"predictor_name": "canary"}, "value": [1, "412.5"]},
                    {"metric": {"predictor_name": "stable"}, "value": [1, "NaN"]},
                ]
            },
        },
        "error_rate": {
            "data": {"result": [{"metric": {"predictor_name": "canary"}, "value": [1, "0.02"]}]}
        },
    }
    observed = slo.observations_from_prometheus(answers)
    assert observed["canary"] == slo.Observation(412.5, 0.02)
    assert "stable" not in observed
    metric = "seldon_api_executor_server_requests_seconds"
    text = "\n".join(
        [
            f'{metric}_bucket{{code="200",le="0.1"}} 50',
            f'{metric}_bucket{{code="200",le="0.5"}} 100',
            f'{metric}_bucket{{code="200",le="+Inf"}} 100',
            f'{metric}_count{{code="200"}} 95',
            f'{metric}_count{{code="500"}} 5',
        ]
    )
    seen = slo.observation_from_text(text)
    assert seen is not None and seen.error_rate == pytest.approx(0.05)
    assert seen.latency_p95_ms == pytest.approx(460)  # 0.1 + (0.5-0.1) * (95-50)/50 seconds
    assert (
        'code=~"5.."'
        in slo.prometheus_queries(
            Deployment.model_validate(
                {
                    "apiVersion": "aiml024.io/v1alpha1",
                    "kind": "Deployment",
                    "metadata": {"name": "churn"},
                    "spec": {"model": "a"},
                }
            )
        )["error_rate"]
    )


# --- approvals -------------------------------------------------------------------------------


def test_approval_records_are_per_artifact_and_never_the_authors() -> None:
    model = _model()
    record, problem = approval_rules.approval_record(model, "alice", "production", NOW)
    assert record is None and problem and "four eyes" in problem
    record, problem = approval_rules.approval_record(
        model, "bob", "production", NOW, groups=["risk-officer"]
    )
    assert problem is None and record == {
        "user": "bob",
        "stage": "production",
        "at": "2026-01-01T12:00:00Z",
        "sha256": SHA,
        "groups": ["risk-officer"],
    }
    stale = {**record, "user": "carol", "sha256": "0" * 64}
    annotated = _model(annotations={"aiml024.io/approvals": json.dumps([record, stale])})
    counted, ignored = approval_rules.model_approvals(annotated, None, NOW)
    assert [(a.user, a.groups) for a in counted] == [("bob", ["risk-officer"])]
    assert ignored == [f"carol's approval was for artifact {'0' * 64}, not the model's {SHA}"]
    _, again = approval_rules.approval_record(annotated, "bob", "production", NOW, counted=counted)
    assert again and "already approved" in again


def test_search_progress_comes_from_the_search_node() -> None:
    status = {
        "progress": "1/5",
        "nodes": {
            "a": {"displayName": "ingest", "progress": "1/1"},
            "b": {"displayName": "search", "progress": "12/40"},
        },
    }
    assert search_progress(status) == (12, None)
    assert search_progress({"nodes": {}}) is None


# --- the gate through OPA --------------------------------------------------------------------


POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _fake_opa(answer: Any, delay: float = 0, revision: str | None = None) -> str:
    """An OPA server's data API: the decision, and the bundle it serves data.aiml024 from
    (at the pinned policy set's revision unless told otherwise)."""
    port = free_port()
    seen: list[dict[str, Any]] = []
    revision = revision or load_bundle(POLICIES).digest

    async def decide(request: web.Request) -> web.Response:
        seen.append(await request.json())
        await asyncio.sleep(delay)
        if isinstance(answer, dict) and "result" in answer:
            return web.json_response(
                {**answer, "provenance": {"bundles": {"aiml024": {"revision": revision}}}}
            )
        return web.json_response(answer)

    async def bundles(_: web.Request) -> web.Response:
        manifest = {"revision": revision, "roots": ["aiml024"]}
        return web.json_response({"result": {"aiml024": {"manifest": manifest}}})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/data/aiml024/promotion/result", decide)
        app.router.add_get("/v1/data/system/bundles", bundles)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    time.sleep(0.2)
    return f"http://127.0.0.1:{port}"


def _config(opa_url: str, timeout: float = 1.0) -> OperatorConfig:
    return OperatorConfig(
        opa_url=opa_url, policy_timeout=timeout, policy_dir=POLICIES, opa_token="x" * 64
    )


def test_an_opa_server_with_another_policy_set_denies() -> None:
    url = _fake_opa({"result": {"decision": "allow", "violations": []}}, revision="sha256:old")
    result = asyncio.run(gate(_config(url), _model(), "production", []))
    assert result.decision == "deny" and "sha256:old" in result.violations[0]


def test_opa_server_decides_when_configured() -> None:
    url = _fake_opa({"result": {"decision": "allow", "violations": []}})
    result = asyncio.run(gate(_config(url), _model(), "production", []))
    assert result.decision == "allow" and result.bundle_digest.startswith("sha256:")


@pytest.mark.parametrize("case", ["unreachable", "timeout", "undefined"])
def test_opa_errors_and_timeouts_deny(case: str) -> None:
    url = {
        "unreachable": f"http://127.0.0.1:{free_port()}",
        "timeout": _fake_opa({"result": {"decision": "allow"}}, delay=3),
        "undefined": _fake_opa({}),
    }[case]
    started = time.monotonic()
    result = asyncio.run(gate(_config(url, timeout=0.5), _model(), "production", []))
    assert result.decision == "deny"
    assert result.violations[0].startswith("policy_error:")
    assert time.monotonic() - started < 3


def test_ab_outcomes_are_read_back_from_the_store(tmp_path: Path) -> None:
    """The operator's own reader of the request log and feedback parts (no pandas)."""
    from aiml024.api.monitoring import monitor_root
    from aiml024.operator import outcomes

    root = Path(monitor_root(str(tmp_path), "ns", "churn"))
    (root / "requests").mkdir(parents=True)
    (root / "feedback" / "2026").mkdir(parents=True)
    lines = [{"id": "1", "role": "stable"}, {"id": "2", "role": "canary"}]
    (root / "requests" / "part-1.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    (root / "feedback" / "2026" / "part-1.jsonl").write_text(
        '{"id": "1", "outcome": true}\n{"id": "2", "outcome": 0}\n{"id": "2", "outc'
    )
    (root / "feedback" / "notes.txt").write_text('{"id": "1", "outcome": 5}')
    assert outcomes.outcomes(tmp_path.as_uri(), "ns", "churn") == ([1.0], [0.0])
    assert outcomes.outcomes(tmp_path.as_uri(), "ns", "other") == ([], [])
