"""Deployment -> SeldonDeployment (`machinelearning.seldon.io/v1`, protocol v2) + monitoring.

Each serving Model becomes one predictor (`stable`, and `canary` or `shadow` when the strategy
says) whose single graph node is an MLServer container running aiml024's own runtime class
(no Seldon `implementation`). The runtime fetches the bundle from `MLSERVER_MODEL_URI` with
fsspec and checks it against `AIML024_MODEL_SHA256`, so local serving and the cluster share one
download path and no Seldon storage initializer (and its rclone secret) is needed.

The MLServer model name is the Deployment's name in every predictor, so one request path,
`/v2/models/<deployment>/infer`, reaches whichever predictor the traffic split picks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiml024.api import Deployment

from .monitoring import compile_monitoring
from .options import MANAGED_BY, CompileError, CompileOptions

RUNTIME_CLASS = "aiml024.runtime.serving.Aiml024Runtime"
# A sha256 (64 hex digits) is longer than a label value may be (63): labels carry a prefix
# for selection, annotations and the container's environment the full digest.
SHORT_DIGEST = 12


@dataclass(frozen=True)
class ServedModel:
    """What serving needs to know about a registered Model version."""

    name: str
    artifact_uri: str
    sha256: str | None = None
    task: str | None = None


def deployment_labels(dep: Deployment) -> dict[str, str]:
    return {
        "aiml024.io/deployment": dep.metadata.name,
        "aiml024.io/generation": str(dep.metadata.generation or 1),
        **MANAGED_BY,
    }


def _container(dep: Deployment, model: ServedModel, options: CompileOptions) -> dict[str, Any]:
    env = {
        "MLSERVER_MODEL_NAME": dep.metadata.name,
        "MLSERVER_MODEL_VERSION": model.name,
        "MLSERVER_MODEL_IMPLEMENTATION": RUNTIME_CLASS,
        "MLSERVER_MODEL_URI": model.artifact_uri,
    }
    if model.sha256:
        env["AIML024_MODEL_SHA256"] = model.sha256
    # The runtime also serves the product route /v1/inference/<deployment>:predict.
    env["AIML024_DEPLOYMENT"] = dep.metadata.name
    container: dict[str, Any] = {"name": dep.metadata.name, "image": options.image}
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    container["resources"] = {
        "requests": {"cpu": options.serving_cpu, "memory": options.serving_memory},
        "limits": {"memory": options.serving_memory},
    }
    return container


def _predictor(
    dep: Deployment, name: str, model: ServedModel, traffic: int | None, options: CompileOptions
) -> dict[str, Any]:
    labels = {"aiml024.io/model": model.name}
    annotations = {}
    if model.sha256:
        labels["aiml024.io/sha256"] = model.sha256[:SHORT_DIGEST]
        annotations["aiml024.io/sha256"] = model.sha256
    if model.task:
        labels["aiml024.io/task"] = model.task
    component: dict[str, Any] = {"spec": {"containers": [_container(dep, model, options)]}}
    autoscaling = dep.spec.autoscaling
    if autoscaling is not None:
        component["hpaSpec"] = {
            # HPA refuses minReplicas 0 unless the cluster enables HPAScaleToZero.
            "minReplicas": max(1, autoscaling.min_replicas),
            "maxReplicas": autoscaling.max_replicas,
            "metricsv2": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        }
    predictor: dict[str, Any] = {"name": name}
    if traffic is None:
        predictor["shadow"] = True
    else:
        predictor["traffic"] = traffic
    if autoscaling is None:
        predictor["replicas"] = dep.spec.replicas
    predictor["labels"] = labels
    if annotations:
        predictor["annotations"] = annotations
    predictor["componentSpecs"] = [component]
    predictor["graph"] = {"name": dep.metadata.name, "type": "MODEL", "children": []}
    return predictor


def compile_seldon_deployment(
    dep: Deployment, models: Mapping[str, ServedModel], options: CompileOptions
) -> dict[str, Any]:
    predictors = []
    for predictor, model_name, traffic in dep.spec.routes():
        model = models.get(model_name)
        if model is None:
            raise CompileError(f"model {model_name!r} (predictor {predictor}) is not registered")
        predictors.append(_predictor(dep, predictor, model, traffic, options))
    metadata: dict[str, Any] = {"name": dep.metadata.name}
    if dep.metadata.namespace:
        metadata["namespace"] = dep.metadata.namespace
    metadata["labels"] = deployment_labels(dep)
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": metadata,
        "spec": {"protocol": "v2", "predictors": predictors},
    }


def compile_deployment(
    dep: Deployment,
    models: Mapping[str, ServedModel],
    options: CompileOptions | None = None,
) -> list[dict[str, Any]]:
    """SeldonDeployment, ServiceMonitor and PrometheusRule for `dep`, in that order.

    `models` maps every Model the strategy names to what it serves; a missing one is a
    CompileError (the operator waits for registration instead of serving nothing).
    """
    options = options or CompileOptions()
    return [
        compile_seldon_deployment(dep, models, options),
        *compile_monitoring(dep, deployment_labels(dep)),
    ]
