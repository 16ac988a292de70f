"""Deployment -> SeldonDeployment, ServiceMonitor and PrometheusRule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES

from aiml024.api import Deployment, Model, parse_object
from aiml024.api.plan import plan_deployment
from aiml024.compiler import (
    CompileError,
    CompileOptions,
    ServedModel,
    compile_deployment,
    compile_objects,
)
from aiml024.compiler.monitoring import compile_monitoring
from aiml024.compiler.seldon import deployment_labels

DIGEST = "ab" * 32
MODELS = {
    name: ServedModel(name, f"s3://bucket/models/{name}", DIGEST, "classification")
    for name in ("churn-model-v1", "churn-model-2")
}


def deployment(spec: dict[str, Any] | None = None, **metadata: Any) -> Deployment:
    document = yaml.safe_load((EXAMPLES / "churn" / "deployment.yaml").read_text())
    document["metadata"] |= metadata
    document["spec"] |= spec or {}
    obj = parse_object(document)
    assert isinstance(obj, Deployment)
    return obj


def compiled(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in compile_deployment(deployment(spec, **metadata), MODELS)}


def predictors(spec: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    sdep = compiled(spec)["SeldonDeployment"]
    return {p["name"]: p for p in sdep["spec"]["predictors"]}


def env(predictor: dict[str, Any]) -> dict[str, str]:
    container = predictor["componentSpecs"][0]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def live_traffic(preds: dict[str, dict[str, Any]]) -> int:
    return sum(p["traffic"] for p in preds.values() if not p.get("shadow"))


CANARY = {"strategy": {"type": "canary", "canary": {"model": "churn-model-2", "weight": 25}}}
SHADOW = {"strategy": {"type": "shadow", "shadow": {"model": "churn-model-2"}}}


class TestSeldonDeployment:
    def test_outputs_in_order(self) -> None:
        kinds = [m["kind"] for m in compile_deployment(deployment(), MODELS)]
        assert kinds == ["SeldonDeployment", "ServiceMonitor", "PrometheusRule"]

    def test_protocol_v2_and_names(self) -> None:
        sdep = compiled(generation=3, namespace="serving")["SeldonDeployment"]
        assert sdep["apiVersion"] == "machinelearning.seldon.io/v1"
        assert sdep["spec"]["protocol"] == "v2"
        assert sdep["metadata"]["name"] == "churn"
        assert sdep["metadata"]["namespace"] == "serving"
        assert sdep["metadata"]["labels"]["aiml024.io/generation"] == "3"

    def test_single_model_gets_all_traffic(self) -> None:
        preds = predictors()
        assert list(preds) == ["stable"]
        assert preds["stable"]["traffic"] == 100

    def test_canary_splits_traffic_by_weight(self) -> None:
        preds = predictors(CANARY)
        assert [(n, p["traffic"]) for n, p in preds.items()] == [("stable", 75), ("canary", 25)]
        assert live_traffic(preds) == 100
        assert env(preds["canary"])["MLSERVER_MODEL_URI"] == "s3://bucket/models/churn-model-2"
        assert preds["canary"]["labels"]["aiml024.io/model"] == "churn-model-2"

    @pytest.mark.parametrize("weight", [0, 1, 50, 99, 100])
    def test_weights_always_sum_to_100(self, weight: int) -> None:
        spec = {"strategy": {"type": "ab", "canary": {"model": "churn-model-2", "weight": weight}}}
        assert live_traffic(predictors(spec)) == 100

    def test_shadow_mirrors_without_live_traffic(self) -> None:
        preds = predictors(SHADOW)
        assert preds["shadow"]["shadow"] is True
        assert "traffic" not in preds["shadow"]
        assert preds["stable"]["traffic"] == 100 and "shadow" not in preds["stable"]

    def test_graph_is_a_custom_mlserver_runtime(self) -> None:
        stable = predictors()["stable"]
        assert "implementation" not in stable["graph"]
        assert stable["graph"] == {"name": "churn", "type": "MODEL", "children": []}
        container = stable["componentSpecs"][0]["spec"]["containers"][0]
        assert container["name"] == stable["graph"]["name"]
        assert container["image"] == CompileOptions().image
        assert env(stable) == {
            "MLSERVER_MODEL_NAME": "churn",
            "MLSERVER_MODEL_VERSION": "churn-model-v1",
            "MLSERVER_MODEL_IMPLEMENTATION": "aiml024.runtime.serving.Aiml024Runtime",
            "MLSERVER_MODEL_URI": "s3://bucket/models/churn-model-v1",
            "AIML024_MODEL_SHA256": DIGEST,
            "AIML024_DEPLOYMENT": "churn",
        }

    def test_digest_in_labels_and_annotations(self) -> None:
        stable = predictors()["stable"]
        assert DIGEST.startswith(stable["labels"]["aiml024.io/sha256"])
        assert stable["annotations"]["aiml024.io/sha256"] == DIGEST
        assert stable["labels"]["aiml024.io/task"] == "classification"

    def test_hpa_from_autoscaling(self) -> None:
        stable = predictors()["stable"]
        assert "replicas" not in stable
        assert stable["componentSpecs"][0]["hpaSpec"] == {
            "minReplicas": 1,
            "maxReplicas": 4,
            "metricsv2": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        }
        requests = stable["componentSpecs"][0]["spec"]["containers"][0]["resources"]["requests"]
        assert "cpu" in requests  # the HPA's utilization is relative to it

    def test_fixed_replicas_without_autoscaling(self) -> None:
        stable = predictors({"autoscaling": None, "replicas": 3})["stable"]
        assert stable["replicas"] == 3
        assert "hpaSpec" not in stable["componentSpecs"][0]

    def test_a_plan_is_served_as_made(self) -> None:
        dep = deployment(CANARY)
        plan = plan_deployment(dep, MODELS, rolled_back=True)
        sdep = compile_deployment(dep, plan)[0]
        assert [(p["name"], p["traffic"]) for p in sdep["spec"]["predictors"]] == [
            ("stable", 100),
            ("canary", 0),
        ]
        assert sdep == compile_deployment(dep, plan_deployment(dep, MODELS, True))[0]
        with pytest.raises(CompileError, match="the plan is for deployment churn"):
            compile_deployment(deployment(CANARY, name="other"), plan)

    def test_unregistered_model_is_a_compile_error(self) -> None:
        with pytest.raises(CompileError, match="churn-model-2"):
            compile_deployment(deployment(CANARY), {"churn-model-v1": MODELS["churn-model-v1"]})


class TestMonitoring:
    def test_service_monitor_selects_the_seldon_services(self) -> None:
        monitor = compiled()["ServiceMonitor"]
        assert monitor["spec"]["selector"] == {"matchLabels": {"seldon-deployment-id": "churn"}}

    def test_slo_alerts_use_the_spec_thresholds(self) -> None:
        rule = compiled({"slo": {"latencyP95Ms": 150, "errorRate": 0.02}})["PrometheusRule"]
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        latency = alerts["Aiml024LatencySLOBreached"]["expr"]
        assert "histogram_quantile(0.95" in latency and latency.endswith("* 1000 > 150")
        assert 'deployment_name="churn"' in latency
        errors = alerts["Aiml024ErrorRateSLOBreached"]["expr"]
        assert 'code=~"5.."' in errors and errors.endswith("> 0.02")

    def test_drift_monitors_become_alerts(self) -> None:
        # The monitoring compiler alone: whether the api accepts monitors yet is its own rule.
        document = deployment().wire()
        document["spec"]["monitors"] = [{"type": "drift", "method": "ks", "threshold": 0.1}]
        dep = Deployment.model_validate(document)
        rule = compile_monitoring(dep, deployment_labels(dep))[1]
        groups = rule["spec"]["groups"]
        drift = [r for g in groups for r in g["rules"] if r["alert"] == "Aiml024DriftDetected"]
        assert drift[0]["expr"] == 'aiml024_drift_score{deployment="churn",method="ks"} > 0.1'

    def test_namespace_scopes_the_queries(self) -> None:
        rule = compiled(namespace="serving")["PrometheusRule"]
        assert all(
            'namespace="serving"' in r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
        )


class TestCompileObjects:
    def test_deployment_without_a_model_uses_a_placeholder(self) -> None:
        options = CompileOptions(artifact_store="s3://store")
        sdep = compile_objects([deployment()], options)[0]
        stable = sdep["spec"]["predictors"][0]
        assert env(stable)["MLSERVER_MODEL_URI"] == "s3://store/models/churn-model-v1"
        assert "AIML024_MODEL_SHA256" not in env(stable)

    def test_registered_model_among_the_objects_is_served(self) -> None:
        model = parse_object(
            {
                "apiVersion": "aiml024.io/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "churn-model-v1"},
                "spec": {
                    "task": "classification",
                    "source": {"artifactUri": "s3://b/churn-model-v1", "sha256": DIGEST},
                },
            }
        )
        assert isinstance(model, Model)
        out = compile_objects([model, deployment()])
        assert [m["kind"] for m in out] == ["SeldonDeployment", "ServiceMonitor", "PrometheusRule"]
        assert env(out[0]["spec"]["predictors"][0])["AIML024_MODEL_SHA256"] == DIGEST

    def test_experiment_compiles_to_a_workflow(self) -> None:
        exp = parse_object(yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text()))
        assert [m["kind"] for m in compile_objects([exp])] == ["Workflow"]
