"""Deployment -> SeldonDeployment (`machinelearning.seldon.io/v1`, protocol v2) + monitoring.

The compiler serves a predictor plan (aiml024.api.plan.PredictorPlan): each planned predictor
becomes one Seldon predictor (`stable`, and `canary` or `shadow` when the strategy or a
rollout says: an A/B test's B, a blue/green's green at traffic 0 until the switch, a promoted
candidate alone as `stable`), with the plan's weight as its traffic, whose single graph node is an MLServer container running
aiml024's own runtime class (no Seldon `implementation`). The runtime fetches the bundle from
`MLSERVER_MODEL_URI` with fsspec and checks it against `AIML024_MODEL_SHA256`, so local serving
and the cluster share one download path and no Seldon storage initializer (and its rclone
secret) is needed.

The MLServer model name is the Deployment's name in every predictor, so one request path,
`/v2/models/<deployment>/infer`, reaches whichever predictor the traffic split picks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiml024.api import Deployment
from aiml024.api.common import DEFAULT_NAMESPACE, DEPLOYMENT_LABEL, GENERATION_LABEL
from aiml024.api.labels import MODEL_LABEL, SHA256_LABEL, TASK_LABEL, short_digest
from aiml024.api.plan import (
    DEPLOYMENT_ENV,
    REQUEST_LOG_ENV,
    ROLE_ENV,
    RUNTIME_CLASS,
    SHA256_ENV,
    MissingModel,
    Predictor,
    PredictorPlan,
    ServedModel,
    plan_deployment,
    request_log_root,
)

from .monitoring import compile_monitoring
from .options import MANAGED_BY, CompileError, CompileOptions

__all__ = [
    "RUNTIME_CLASS",
    "ServedModel",
    "compile_deployment",
    "compile_seldon_deployment",
    "deployment_labels",
]


def deployment_labels(dep: Deployment) -> dict[str, str]:
    return {
        DEPLOYMENT_LABEL: dep.metadata.name,
        GENERATION_LABEL: str(dep.metadata.generation or 1),
        **MANAGED_BY,
    }


def _container(dep: Deployment, planned: Predictor, options: CompileOptions) -> dict[str, Any]:
    model = planned.model
    env = {
        "MLSERVER_MODEL_NAME": dep.metadata.name,
        "MLSERVER_MODEL_VERSION": model.name,
        "MLSERVER_MODEL_IMPLEMENTATION": RUNTIME_CLASS,
        "MLSERVER_MODEL_URI": model.artifact_uri,
    }
    if model.sha256:
        env[SHA256_ENV] = model.sha256
    # The runtime also serves the product route /v1/inference/<deployment>:predict.
    env[DEPLOYMENT_ENV] = dep.metadata.name
    # Every predictor logs its requests under its role where the monitors, the A/B test and
    # the rollouts read them (the same root as on one machine).
    namespace = dep.metadata.namespace or DEFAULT_NAMESPACE
    env[REQUEST_LOG_ENV] = request_log_root(options.artifact_store, namespace, dep.metadata.name)
    env[ROLE_ENV] = planned.role
    container: dict[str, Any] = {"name": dep.metadata.name, "image": options.image}
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    container["resources"] = {
        "requests": {"cpu": options.serving_cpu, "memory": options.serving_memory},
        "limits": {"memory": options.serving_memory},
    }
    return container


def _predictor(dep: Deployment, planned: Predictor, options: CompileOptions) -> dict[str, Any]:
    model = planned.model
    labels = {MODEL_LABEL: model.name}
    annotations = {}
    if model.sha256:
        labels[SHA256_LABEL] = short_digest(model.sha256)
        annotations[SHA256_LABEL] = model.sha256
    if model.task:
        labels[TASK_LABEL] = model.task
    component: dict[str, Any] = {"spec": {"containers": [_container(dep, planned, options)]}}
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
    predictor: dict[str, Any] = {"name": planned.role}
    if planned.shadow:
        predictor["shadow"] = True
    else:
        predictor["traffic"] = planned.weight
    if autoscaling is None:
        predictor["replicas"] = dep.spec.replicas
    predictor["labels"] = labels
    if annotations:
        predictor["annotations"] = annotations
    predictor["componentSpecs"] = [component]
    predictor["graph"] = {"name": dep.metadata.name, "type": "MODEL", "children": []}
    return predictor


def plan_of(dep: Deployment, served: PredictorPlan | Mapping[str, ServedModel]) -> PredictorPlan:
    """`served` as a plan: a plan as it is, or Models by name planned as the spec asks (a
    Model the spec names and `served` lacks is a CompileError)."""
    if isinstance(served, PredictorPlan):
        if served.deployment != dep.metadata.name:
            raise CompileError(
                f"the plan is for deployment {served.deployment}, not {dep.metadata.name}"
            )
        return served
    try:
        return plan_deployment(dep, served)
    except MissingModel as missing:
        raise CompileError(str(missing)) from None


def compile_seldon_deployment(
    dep: Deployment, served: PredictorPlan | Mapping[str, ServedModel], options: CompileOptions
) -> dict[str, Any]:
    predictors = [_predictor(dep, planned, options) for planned in plan_of(dep, served)]
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
    served: PredictorPlan | Mapping[str, ServedModel],
    options: CompileOptions | None = None,
) -> list[dict[str, Any]]:
    """SeldonDeployment, ServiceMonitor, PrometheusRule and one CronWorkflow per drift monitor
    for `dep`, in that order.

    `served` is the plan to serve (the control planes pass the one they made, rollback
    included), or what each Model the strategy names serves, planned here as the spec asks
    (`aiml024 compile`); a Model missing from it is a CompileError (the operator waits for
    registration instead of serving nothing).
    """
    options = options or CompileOptions()
    plan = plan_of(dep, served)
    return [
        compile_seldon_deployment(dep, plan, options),
        *compile_monitoring(dep, deployment_labels(dep), plan, options),
    ]
