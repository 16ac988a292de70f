"""The churn demo as a new user runs it: apply, inspect, call, promote, approve, delete."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Cli, make_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """Apply examples/churn/ once for the module; always stop the server at the end."""
    root = tmp_path_factory.mktemp("demo")
    cli = make_cli(root / "state", root)
    started = time.monotonic()
    result = cli("apply", "-f", str(EXAMPLES / "churn"))
    elapsed = time.monotonic() - started
    yield cli, root / "state", result, elapsed
    cli("delete", "-f", str(EXAMPLES / "churn"))


def get(cli: Cli, kind: str, name: str) -> dict:
    result = cli("get", kind, name, "-o", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_apply_trains_gates_and_serves_within_three_minutes(demo) -> None:
    cli, _home, result, elapsed = demo
    assert result.code == 0, result.err
    assert elapsed < 180, f"the demo took {elapsed:.0f} s"
    assert "serving at http://127.0.0.1:" in result.out
    assert "one real prediction" in result.out
    assert '"predictions"' in result.out and '"score"' in result.out


def test_tuned_model_beats_the_default_lightgbm_baseline(demo) -> None:
    cli, *_ = demo
    model = get(cli, "model", "churn-model-v1")
    status = model["status"]
    assert status["primaryMetric"] == "auc"
    assert status["metrics"]["auc"] > status["baselineMetrics"]["auc"]
    assert 0.75 < status["metrics"]["auc"] < 0.97
    assert status["sha256"] and status["artifactUri"].startswith("file://")
    lineage = status["lineage"]
    assert lineage["datasetFingerprint"] and lineage["specHash"] and lineage["codeVersion"]
    assert status["policy"]["decision"] == "allow" and status["stage"] == "staging"
    assert set(status["evidence"]["piiColumns"]) >= {"email"}


def test_a_risk_officer_gets_the_whole_evidence_of_the_run(demo) -> None:
    """Fairness over senior, calibration, explanations, the report, a signed card, the lineage
    and the audit log: all produced by the run, all checkable from the command line."""
    cli, *_ = demo
    status = get(cli, "model", "churn-model-v1")["status"]
    evidence = status["evidence"]
    assert evidence["sensitiveAttributes"] == ["senior", "region"]
    assert set(evidence["fairness"]) == {
        f"{a}.{f}" for a in ("senior", "region")
        for f in ("demographic_parity_difference", "equalized_odds_difference")}  # fmt: skip
    assert 0 <= evidence["calibration"]["ece"] <= 0.05
    assert 0 < evidence["serving"]["latencyP95Ms"] < 100 and evidence["serving"]["sizeMb"] > 0
    card = Path(evidence["modelCardUri"].removeprefix("file://")).parent
    for produced in ("model_card.json", "model_card.md", "model_card.html", "explanations.json",
                     "report.html", "signature.json"):  # fmt: skip
        assert (card / produced).is_file(), produced
    assert evidence["reportUri"].endswith("/card/report.html")
    explained = json.loads((card / "explanations.json").read_text())
    assert explained["shap"]["method"] == "tree-shap" and explained["partialDependence"]
    report = (card / "report.html").read_text()
    assert "senior" in report and "<svg" in report and "https://" not in report
    verified = cli("verify", "model/churn-model-v1")
    assert verified.code == 0, verified.out + verified.err
    lineage = cli("lineage", "model/churn-model-v1", "--json")
    assert lineage.code == 0, lineage.err
    graph = json.loads(lineage.out)
    assert graph["dataset"] and graph["transform"] and graph["trial"]
    assert cli("audit", "verify").code == 0
    assert "policy" in cli("audit", "log").out


def test_get_shows_kubectl_like_tables(demo) -> None:
    cli, *_ = demo
    table = cli("get", "experiments").out
    header = table.splitlines()[0].split()
    assert header == ["NAME", "TASK", "PHASE", "TRIALS", "METRIC", "BEST", "AGE"]
    row = table.splitlines()[1].split()
    assert row[:3] == ["churn", "classification", "Succeeded"]
    done, total = row[3].split("/")
    assert int(done) >= 1 and total == "40"
    assert row[4] == "auc"
    exp = get(cli, "experiments", "churn")
    assert exp["status"]["observedGeneration"] == exp["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in exp["status"]["conditions"]}["Ready"] == "True"
    as_yaml = yaml.safe_load(cli("get", "deployment", "churn", "-o", "yaml").out)
    assert as_yaml["status"]["endpoint"].startswith("http://127.0.0.1:")


def test_describe_tells_the_story(demo) -> None:
    cli, *_ = demo
    page = cli("describe", "experiment", "churn").out
    assert "Leaderboard" in page and "WorkflowCreated" in page and "ModelRegistered" in page
    model_page = cli("describe", "model", "churn-model-v1").out
    assert "baseline" in model_page and "Policy:" in model_page


def test_both_protocols_answer(demo) -> None:
    cli, *_ = demo
    endpoint = get(cli, "deployment", "churn")["status"]["endpoint"]
    row = {"customer_id": "C-TEST-1", "tenure_months": 2, "monthly_charges": 105.0,
           "contract": "month-to-month", "last_message": "the price went up again, I want to cancel"}  # fmt: skip
    prd = httpx.post(
        f"{endpoint}/v1/inference/churn:predict", json={"instances": [row]}, timeout=30
    )
    assert prd.status_code == 200, prd.text
    body = prd.json()
    [prediction] = body["predictions"]
    assert prediction["customer_id"] == "C-TEST-1"
    assert prediction["label"] in (0, 1) and 0.0 <= prediction["score"] <= 1.0
    assert body["latency_ms"] > 0
    explained = httpx.post(
        f"{endpoint}/v1/inference/churn:predict",
        json={"instances": [row], "explain": True}, timeout=30,
    ).json()["predictions"][0]["explanation"]  # fmt: skip
    assert explained["method"] == "tree-shap" and explained["space"] == "log-odds"
    features = [c["feature"] for c in explained["contributions"]]
    assert "contract" in features and "region" not in features  # measured, not a feature
    flip = httpx.post(
        f"{endpoint}/v1/inference/churn:predict",
        json={"instances": [row], "counterfactual": True}, timeout=30,
    ).json()["predictions"][0]["counterfactual"]  # fmt: skip
    assert flip["decision"] == str(prediction["label"])
    assert flip["flipsTo"] is None or flip["changes"], flip
    v2 = httpx.post(f"{endpoint}/v2/models/churn-model-v1/infer", timeout=30, json={
        "parameters": {"content_type": "pd"},
        "inputs": [{"name": "tenure_months", "datatype": "FP64", "shape": [1], "data": [2]},
                   {"name": "contract", "datatype": "BYTES", "shape": [1], "data": ["month-to-month"]}],
    })  # fmt: skip
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert set(outputs) >= {"label", "score"}


def test_production_is_refused_on_fairness_until_glass_is_broken_and_approved(demo) -> None:
    """The churn model's selection rate differs across regions far beyond 0.1: production is
    denied on the evidence; a risk officer breaks the glass with a reason (not the author),
    and still another person must approve."""
    cli, *_ = demo
    author = os.environ.get("AIML024_USER") or __import__("getpass").getuser()
    asked = cli("promote", "model/churn-model-v1", "--stage", "production")
    assert asked.code == 1 and "deny" in asked.out
    assert "fairness_demographic_parity" in asked.out and "region" in asked.out
    status = get(cli, "model", "churn-model-v1")["status"]
    assert status["evidence"]["fairness"]["region.demographic_parity_difference"] > 0.1
    assert status["stage"] == "staging"
    why = "retention campaign needs it; regional disparity reviewed, ticket RISK-42"
    own = cli("promote", "model/churn-model-v1", "--stage", "production",
              "--break-glass", why, user=author)  # fmt: skip
    assert own.code != 0 and "author" in (own.out + own.err)
    broken = cli("promote", "model/churn-model-v1", "--stage", "production",
                 "--break-glass", why, user="risk-officer")  # fmt: skip
    assert broken.code == 0, broken.out + broken.err
    assert "require_approval" in broken.out and "break_glass" in broken.out
    mine = cli("approve", "model/churn-model-v1", "--stage", "production", user="risk-officer")
    assert get(cli, "model", "churn-model-v1")["status"]["stage"] == "staging", mine.out
    other = cli("approve", "model/churn-model-v1", "--stage", "production", user="cro")
    assert other.code == 0, other.err
    model = get(cli, "model", "churn-model-v1")
    assert model["status"]["stage"] == "production"
    assert any("break_glass: risk-officer overrode fairness_demographic_parity" in v
               for v in model["status"]["policy"]["violations"])  # fmt: skip
    assert "break-glass" in cli("audit", "log").out


def test_apply_again_is_idempotent(demo) -> None:
    cli, home, *_ = demo
    workflows = sorted(p.name for p in (home / "objects" / "workflows").rglob("*.json"))
    again = cli("apply", "-f", str(EXAMPLES / "churn"))
    assert again.code == 0, again.err
    assert "up to date" in again.out and "already serving" in again.out
    assert sorted(p.name for p in (home / "objects" / "workflows").rglob("*.json")) == workflows


def test_delete_stops_the_model_server(demo) -> None:
    cli, home, *_ = demo
    info = json.loads((home / "servers" / "churn.json").read_text())
    result = cli("delete", "-f", str(EXAMPLES / "churn"))
    assert result.code == 0
    assert "deployment.aiml024.io/churn deleted" in result.out
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the model server process is still running")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{info['url']}/v2/health/live", timeout=2)
    assert cli("get", "deployments").out.strip() == "No deployments found."
    # The Experiment's Workflows and step directories go with it; the Model version stays.
    assert not list((home / "objects" / "workflows").rglob("*.json"))
    assert not (home / "runs" / "churn-g1").exists()
    assert cli("get", "model", "churn-model-v1").code == 0


def test_compile_prints_the_cluster_manifests(tmp_path: Path) -> None:
    cli = make_cli(tmp_path / "state", tmp_path)
    result = cli("compile", "-f", str(EXAMPLES / "churn"))
    assert result.code == 0, result.err
    kinds = [d["kind"] for d in yaml.safe_load_all(result.out)]
    assert "Workflow" in kinds and "SeldonDeployment" in kinds
