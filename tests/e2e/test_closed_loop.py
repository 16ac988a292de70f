"""The closed loop on one machine, as a user runs it: deploy, traffic drifts, the monitor fires
and alerts, retraining runs through the gate, the new version rolls out through its canary
steps and is promoted; a canary that breaches the SLO is rolled back; an A/B test runs to a
significant result and promotes B. The background controller is driven by hand
(`aiml024 controller run --once`, `aiml024 monitor run`) so the timing is the test's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from tests.e2e.conftest import Cli, make_cli, small_table, write_experiment

FLUSH_S = 1.5  # the servers write their request log every second


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()


def _deployment(directory: Path, name: str, **spec: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = {"model": "loop-model-v1", "requireStage": "staging", **spec}
    path = directory / f"{name}-deployment.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Deployment",
        "metadata": {"name": name}, "spec": body,
    }))  # fmt: skip
    return path


def _get(cli: Cli, kind: str, name: str) -> dict[str, Any]:
    result = cli("get", kind, name, "-o", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def _predict(endpoint: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(endpoint, json={"instances": rows}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(frame: Any) -> list[dict[str, Any]]:
    return frame.drop(columns=["left"]).to_dict(orient="records")


def _endpoint(cli: Cli, name: str) -> str:
    status = _get(cli, "deployment", name)["status"]
    return f"{status['endpoint']}/v1/inference/{name}:predict"


def _events(home: Path, name: str) -> list[str]:
    from aiml024.local.store import Store

    return [f"{e['reason']}: {e['message']}" for e in Store(home).events_for("Deployment", name)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, webhook: str) -> Iterator[dict[str, Any]]:
    """Train loop-model-v1 and serve it with a retraining drift monitor; send drifted traffic;
    run the monitor (retrains v2, which starts its canary); send traffic; one controller tick
    after the step's pause promotes v2."""
    root = tmp_path_factory.mktemp("loop")
    home = root / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIML024_CONTROLLER", "off")
        cli = make_cli(home, root)
        small_table(600, seed=0).to_csv(root / "train.csv", index=False)
        drifted = small_table(600, seed=1)
        drifted["usage"] = (drifted["usage"] + 2.5).round(3)  # the world moved
        drifted.to_csv(root / "fresh.csv", index=False)
        experiment = write_experiment(root, "train.csv", name="loop")
        monitor = {
            "name": "usage-drift", "method": "psi", "threshold": 0.25, "minRows": 50,
            "schedule": "0 * * * *", "webhook": webhook, "action": "retrain",
            "retrain": {
                "experiment": "loop", "dataUri": str(root / "fresh.csv"),
                "steps": [{"weight": 50, "pauseSeconds": 1}],
            },
        }  # fmt: skip
        deployment = _deployment(root, "loop", monitors=[monitor])
        trained = cli("apply", "-f", str(experiment), user="alice")
        assert trained.code == 0, trained.err
        applied = cli("apply", "-f", str(deployment), user="bob")
        assert applied.code == 0, applied.err
        endpoint = _endpoint(cli, "loop")
        first = _predict(endpoint, _rows(drifted.head(5)))
        for start in range(0, 200, 20):
            _predict(endpoint, _rows(drifted.iloc[start : start + 20]))
        time.sleep(FLUSH_S)
        monitored = cli("monitor", "run", "deployment/loop")
        during = _get(cli, "deployment", "loop")["status"]
        for start in range(0, 120, 2):
            _predict(endpoint, _rows(drifted.iloc[start : start + 2]))
        time.sleep(FLUSH_S)
        ticked = cli("controller", "run", "--once")
        yield {
            "cli": cli, "home": home, "root": root, "first": first, "monitored": monitored,
            "during": during, "ticked": ticked, "endpoint": endpoint, "drifted": drifted,
        }  # fmt: skip
        cli("delete", "-f", str(root))


def test_drift_fires_the_monitor_and_its_alert(loop: dict[str, Any]) -> None:
    monitored = loop["monitored"]
    assert monitored.code == 3, monitored.out + monitored.err  # 3: drift found
    assert "drift: psi" in monitored.out
    status = _get(loop["cli"], "deployment", "loop")["status"]
    usage = next(m for m in status["monitors"] if m["name"] == "usage-drift")
    assert usage["drifted"] and usage["score"] > 0.25 and usage["rows"] >= 50
    assert status["drift"]["usage"] > 0.25
    assert status["drift"]["plan"] < 0.25  # only what moved is called drift
    assert _Hook.received, "the webhook got no alert"
    assert "usage" in json.dumps(_Hook.received[-1])
    assert any(e.startswith("DriftDetected:") for e in _events(loop["home"], "loop"))


def test_retraining_runs_through_the_gate_and_rolls_out_as_a_canary(
    loop: dict[str, Any],
) -> None:
    cli = loop["cli"]
    experiment = _get(cli, "experiment", "loop")
    assert experiment["metadata"]["generation"] == 2
    assert experiment["spec"]["data"]["uri"] == str(loop["root"] / "fresh.csv")
    v2 = _get(cli, "model", "loop-model-v2")["status"]
    assert v2["policy"]["decision"] == "allow" and v2["stage"] == "staging"
    # bob's retrain instruction chose the data v2 learned from: v2 is his, and four eyes hold.
    assert _get(cli, "model", "loop-model-v1")["spec"]["owner"] == "alice"
    assert _get(cli, "model", "loop-model-v2")["spec"]["owner"] == "bob"
    refused = cli("approve", "model/loop-model-v2", "--stage", "production", user="bob")
    assert refused.code != 0 and "author" in (refused.out + refused.err)
    rollout = loop["during"]["rollout"]
    assert rollout["source"] == "retrain" and rollout["candidate"] == "loop-model-v2"
    assert rollout["phase"] == "Progressing" and rollout["weight"] == 50
    assert loop["during"]["traffic"] == {"stable": 50, "canary": 50}


def test_the_canary_steps_end_with_the_new_version_promoted(loop: dict[str, Any]) -> None:
    cli = loop["cli"]
    assert loop["ticked"].code == 0, loop["ticked"].err
    status = _get(cli, "deployment", "loop")["status"]
    assert status["rollout"]["phase"] == "Promoted", loop["ticked"].out
    v2 = _get(cli, "model", "loop-model-v2")["status"]
    assert status["models"]["stable"] == v2["sha256"]
    assert status["traffic"] == {"stable": 100}
    answered = _predict(_endpoint(cli, "loop"), _rows(loop["drifted"].head(3)))
    assert answered["model"] == "loop-model-v2"
    assert loop["first"]["model"] == "loop-model-v1"
    wide = cli("get", "deployments", "-o", "wide").out
    assert "loop-model-v2 Promoted 100%" in wide and "usage=" in wide
    events = _events(loop["home"], "loop")
    assert any(e.startswith("Retraining:") for e in events)
    assert any(e.startswith("Promoted:") for e in events)
    log = cli("audit", "log")
    assert "retrains experiment loop" in log.out and "loop-model-v2 promoted" in log.out


def test_a_canary_that_breaches_the_slo_is_rolled_back(loop: dict[str, Any]) -> None:
    cli, root = loop["cli"], loop["root"]
    canary = {"model": "loop-model-v2", "steps": [{"weight": 50, "pauseSeconds": 600}]}
    path = _deployment(
        root / "slo", "slo", strategy={"type": "canary", "canary": canary},
        slo={"latencyP95Ms": 0.001, "errorRate": 0.01},  # no real request is that fast
    )  # fmt: skip
    assert cli("apply", "-f", str(path)).code == 0
    endpoint = _endpoint(cli, "slo")
    served = {_predict(endpoint, _rows(loop["drifted"].iloc[[i]]))["model"] for i in range(40)}
    assert served == {"loop-model-v1", "loop-model-v2"}
    time.sleep(0.5)
    ticked = cli("controller", "run", "--once")
    assert ticked.code == 0, ticked.err
    status = _get(cli, "deployment", "slo")["status"]
    assert status["rollout"]["phase"] == "RolledBack"
    assert status["traffic"] == {"stable": 100, "canary": 0}
    assert status["sloState"] == "Breached" and "latency" in status["lastRollback"]["reason"]
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["status"] == "True"
    assert any(e.startswith("RolledBack:") for e in _events(loop["home"], "slo"))
    after = {_predict(endpoint, _rows(loop["drifted"].iloc[[i]]))["model"] for i in range(20)}
    assert after == {"loop-model-v1"}


def test_an_ab_test_runs_to_a_significant_result_and_promotes_b(loop: dict[str, Any]) -> None:
    cli, root = loop["cli"], loop["root"]
    ab = {"model": "loop-model-v2", "weight": 50, "minSamples": 30, "alpha": 0.05}
    path = _deployment(root / "ab", "ab", strategy={"type": "ab", "ab": ab})
    assert cli("apply", "-f", str(path)).code == 0
    endpoint = _endpoint(cli, "ab")
    feedback_url = endpoint.replace("/v1/inference/ab:predict", "/v1/feedback/ab")
    rng = np.random.default_rng(7)
    outcomes = []
    for i in range(300):
        answer = _predict(endpoint, _rows(loop["drifted"].iloc[[i % 600]]))
        converted = rng.random() < (0.6 if answer["model"] == "loop-model-v2" else 0.3)
        outcomes.append({"id": answer["id"], "outcome": bool(converted)})
    posted = httpx.post(feedback_url, json={"feedback": outcomes}, timeout=30)
    assert posted.status_code == 200, posted.text
    time.sleep(FLUSH_S)
    ticked = cli("controller", "run", "--once")
    assert ticked.code == 0, ticked.err
    status = _get(cli, "deployment", "ab")["status"]
    result = status["rollout"]["ab"]
    assert result["decision"] == "b-better", result
    assert result["pValue"] < 0.05 and sum(result["samples"].values()) == 300
    assert status["rollout"]["phase"] == "Promoted"
    assert _predict(endpoint, _rows(loop["drifted"].head(1)))["model"] == "loop-model-v2"
