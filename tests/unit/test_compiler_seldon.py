"""Deployment -> SeldonDeployment, ServiceMonitor and PrometheusRule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES
from tests.schema_validation import validate_upstream

from aiml024.api import Deployment, Model, parse_object
from aiml024.api.deployment import RolloutStatus
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
    document["spec"].pop("monitors", None)  # the drift monitors' tests add their own
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
    def test_each_predictor_logs_its_requests_under_its_role(self) -> None:
        """Monitors, the A/B test and rollouts read the request log by role (CONTRACTS.md)."""
        spec = {"strategy": {"type": "canary", "canary": {"model": "churn-model-2"}}}
        sdep = {m["kind"]: m for m in compile_deployment(
            deployment(spec, namespace="serving"), MODELS, CompileOptions(artifact_store="s3://a")
        )}["SeldonDeployment"]  # fmt: skip
        for predictor in sdep["spec"]["predictors"]:
            assert env(predictor)["AIML024_ROLE"] == predictor["name"]
            assert env(predictor)["AIML024_REQUEST_LOG"] == "s3://a/serving/_serving/churn/"

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
        spec = {
            "strategy": {"type": "canary", "canary": {"model": "churn-model-2", "weight": weight}}
        }
        assert live_traffic(predictors(spec)) == 100
        if 1 <= weight <= 99:
            ab = {"strategy": {"type": "ab", "ab": {"model": "churn-model-2", "weight": weight}}}
            preds = predictors(ab)
            assert [(n, p["traffic"]) for n, p in preds.items()] == [
                ("stable", 100 - weight),
                ("canary", weight),
            ]

    def test_bluegreen_loads_green_beside_blue_with_no_traffic(self, schemas_dir: Path) -> None:
        spec = {"strategy": {"type": "bluegreen", "blueGreen": {"model": "churn-model-2"}}}
        sdep = compiled(spec)["SeldonDeployment"]
        preds = {p["name"]: p for p in sdep["spec"]["predictors"]}
        assert [(n, p["traffic"]) for n, p in preds.items()] == [("stable", 100), ("canary", 0)]
        assert preds["canary"]["labels"]["aiml024.io/model"] == "churn-model-2"
        assert validate_upstream(sdep, schemas_dir) == []

    @pytest.mark.parametrize(
        ("phase", "weight", "expected"),
        [
            ("Progressing", 50, [("stable", 50), ("canary", 50)]),
            ("Progressing", 100, [("stable", 0), ("canary", 100)]),  # blue/green switched
            ("RolledBack", 0, [("stable", 100), ("canary", 0)]),
            ("Concluded", 0, [("stable", 100), ("canary", 0)]),
        ],
    )
    def test_a_rollouts_plan_sets_the_weights(
        self, phase: str, weight: int, expected: list[tuple[str, int]], schemas_dir: Path
    ) -> None:
        dep = deployment({"strategy": {"type": "ab", "ab": {"model": "churn-model-2"}}})
        rollout = RolloutStatus(
            strategy="ab", candidate="churn-model-2", phase=phase, weight=weight
        )  # type: ignore[arg-type]
        sdep = compile_deployment(dep, plan_deployment(dep, MODELS, rollout=rollout))[0]
        assert [(p["name"], p["traffic"]) for p in sdep["spec"]["predictors"]] == expected
        assert validate_upstream(sdep, schemas_dir) == []

    def test_a_promoted_candidate_is_the_only_predictor(self, schemas_dir: Path) -> None:
        dep = deployment(CANARY)
        rollout = RolloutStatus(strategy="canary", candidate="churn-model-2", phase="Promoted")
        sdep = compile_deployment(dep, plan_deployment(dep, MODELS, rollout=rollout))[0]
        [stable] = sdep["spec"]["predictors"]
        assert (stable["name"], stable["traffic"]) == ("stable", 100)
        assert env(stable)["MLSERVER_MODEL_URI"] == "s3://bucket/models/churn-model-2"
        assert validate_upstream(sdep, schemas_dir) == []

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
            "AIML024_REQUEST_LOG": "s3://aiml024-artifacts/default/_serving/churn/",
            "AIML024_ROLE": "stable",
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


MONITORS = {
    "monitors": [
        {"name": "inputs", "method": "ks", "threshold": 0.1, "schedule": "*/15 * * * *",
         "features": ["tenure"], "webhook": "https://hooks.example/T0/B0/x"},
        {"name": "retrain", "action": "retrain",
         "retrain": {"experiment": "churn", "dataUri": "s3://data/churn/fresh.parquet"}},
    ]
}  # fmt: skip


class TestDriftMonitors:
    def crons(self, spec: dict[str, Any] | None = None, **metadata: Any) -> list[dict[str, Any]]:
        dep = deployment({**MONITORS, **(spec or {})}, **metadata)
        return [m for m in compile_deployment(dep, MODELS) if m["kind"] == "CronWorkflow"]

    def test_argo_template_syntax_in_a_monitor_is_refused(self) -> None:
        spec = {"monitors": [{"name": "m", "features": ["{{workflow.parameters.spec}}"]}]}
        with pytest.raises(CompileError, match="Argo template syntax"):
            self.crons(spec)

    def test_each_monitor_is_a_cron_workflow_on_its_schedule(self) -> None:
        inputs, retrain = self.crons(namespace="ml")
        assert inputs["metadata"]["name"] == "churn-inputs-drift"
        assert inputs["metadata"]["namespace"] == "ml"
        labels = inputs["metadata"]["labels"]
        assert labels["aiml024.io/deployment"] == "churn"
        assert labels["app.kubernetes.io/managed-by"] == "aiml024"
        spec = inputs["spec"]
        assert spec["schedules"] == ["*/15 * * * *"] and retrain["spec"]["schedules"] == [
            "0 * * * *"
        ]
        assert spec["timezone"] == "UTC" and spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] > 0
        assert spec["successfulJobsHistoryLimit"] and spec["failedJobsHistoryLimit"]
        workflow = spec["workflowSpec"]
        assert workflow["serviceAccountName"] == "aiml024-runtime"
        (template,) = workflow["templates"]
        assert workflow["entrypoint"] == template["name"]

    def test_the_monitor_runs_against_the_stable_model_and_the_store(self) -> None:
        options = CompileOptions(image="registry.example/aiml024:2", artifact_store="s3://store")
        dep = deployment({**MONITORS, **CANARY}, namespace="ml")
        (cron, _) = [
            m for m in compile_deployment(dep, MODELS, options) if m["kind"] == "CronWorkflow"
        ]
        container = cron["spec"]["workflowSpec"]["templates"][0]["container"]
        assert container["image"] == "registry.example/aiml024:2"
        assert container["command"] == ["python", "-m", "aiml024.runtime.monitor"]
        args = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
        monitor = json.loads(args.pop("--monitor"))
        assert monitor["name"] == "inputs" and monitor["features"] == ["tenure"]
        assert args == {
            "--deployment": "churn",
            "--namespace": "ml",
            "--model": "churn-model-v1",  # the stable one, not the canary
            "--sha256": DIGEST,
            "--model-uri": "s3://bucket/models/churn-model-v1",
            "--root": "s3://store/ml/_serving/churn",
        }

    def test_the_plan_decides_which_model_is_stable(self) -> None:
        dep = deployment(MONITORS)
        plan = plan_deployment(dep, MODELS)
        crons = [
            m
            for m in compile_monitoring(dep, deployment_labels(dep), plan)
            if m["kind"] == "CronWorkflow"
        ]
        assert len(crons) == 2
        assert compile_monitoring(dep, deployment_labels(dep))[2:] == []  # no plan, no monitors

    def test_no_monitors_no_cron_workflows(self) -> None:
        assert [m["kind"] for m in compile_deployment(deployment(), MODELS)] == [
            "SeldonDeployment", "ServiceMonitor", "PrometheusRule",
        ]  # fmt: skip

    def test_long_names_are_shortened_for_argo(self) -> None:
        (cron, _) = self.crons(name="a-very-long-deployment-name-that-keeps-going-and-going")
        assert len(cron["metadata"]["name"]) <= 52 and cron["metadata"]["name"].endswith(
            "-inputs-drift"
        )

    def test_compiled_cron_workflows_validate_upstream(self, schemas_dir: Any) -> None:
        from tests.schema_validation import validate_upstream

        for cron in self.crons(namespace="ml"):
            assert validate_upstream(cron, schemas_dir) == []
        broken = self.crons()[0]
        broken["spec"]["schedule"] = "0 * * * *"  # the field Argo v4 dropped
        assert any("'schedule' was unexpected" in p for p in validate_upstream(broken, schemas_dir))
