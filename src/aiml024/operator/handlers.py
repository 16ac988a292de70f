"""Every kopf registration of the operator, in one place; the work is in one module per kind.

Handlers are thin: they name what changed and call the kind's reconcile, which reads, decides
(aiml024.reconcile / policy / compiler), acts and reports. Handlers return nothing, so kopf
writes nothing of its own into status (the CRD schemas would refuse it).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..api.common import DEPLOYMENT_LABEL, EXPERIMENT_LABEL
from ..compiler.options import MANAGED_BY
from . import admission, deployment, experiment, model, monitors
from .config import OperatorConfig, slo_interval
from .kube import DEPLOYMENTS, EXPERIMENTS, MODELS, SELDON, WORKFLOWS, Connection, Kube

# --- operator lifecycle ---------------------------------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    connection = Connection.from_environment()
    return connection.as_kopf() if connection else kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # Bookkeeping in annotations, never in status: the CRDs' status schemas are strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="kopf.aiml024.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.aiml024.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "aiml024-operator"
    settings.watching.server_timeout = 600  # reconnect now and then; resumes by resourceVersion
    settings.admission.server = _webhook_server(config)
    settings.admission.managed = None  # the webhook configurations come with manifests/
    connection = Connection.from_environment()
    if connection is None:
        info = kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise kopf.PermanentError("no Kubernetes credentials: not in a pod, no kubeconfig")
        connection = Connection.from_kopf(info)
    memo.config = config
    memo.kube = Kube(connection)


def _webhook_server(config: OperatorConfig) -> kopf.WebhookServer:
    cert, key = config.webhook_cert_dir / "tls.crt", config.webhook_cert_dir / "tls.key"
    if cert.exists() and key.exists():  # mounted from the cert-manager Secret
        return kopf.WebhookServer(
            port=config.webhook_port,
            certfile=str(cert),
            pkeyfile=str(key),
            host=config.webhook_host,
        )
    # No certificate: plain HTTP, for tests and `kopf run` against a local API emulator only.
    return kopf.WebhookServer(
        addr="127.0.0.1", port=config.webhook_port, insecure=True, host=config.webhook_host
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()


# --- Experiment -----------------------------------------------------------------------------


@kopf.on.resume(*EXPERIMENTS.selector)
@kopf.on.create(*EXPERIMENTS.selector)
@kopf.on.update(*EXPERIMENTS.selector, field="spec")
async def experiment_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await experiment.reconcile(memo.kube, memo.config, namespace, name, ensure=True)


@kopf.on.event(*WORKFLOWS.selector, labels=MANAGED_BY)
async def workflow_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(EXPERIMENT_LABEL)
    if owner:
        await experiment.reconcile(memo.kube, memo.config, namespace, owner, ensure=False)


# --- Model ----------------------------------------------------------------------------------


@kopf.on.resume(*MODELS.selector)
@kopf.on.create(*MODELS.selector)
@kopf.on.update(*MODELS.selector)  # spec.stage, and approvals (annotations)
async def model_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await model.reconcile(memo.kube, memo.config, namespace, name)


@kopf.on.event(*MODELS.selector)
async def model_event(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A Model's recorded decision or stage changed: the Deployments serving it look again
    (a model that lost its approval stops counting as servable, and they say so)."""
    await deployment.model_changed(memo.kube, memo.config, namespace, name)


# --- Deployment -----------------------------------------------------------------------------


@kopf.on.resume(*DEPLOYMENTS.selector)
@kopf.on.create(*DEPLOYMENTS.selector)
@kopf.on.update(*DEPLOYMENTS.selector, field="spec")
async def deployment_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await deployment.reconcile(memo.kube, memo.config, namespace, name, apply=True)


@kopf.on.event(*SELDON.selector, labels=MANAGED_BY)
async def seldon_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(DEPLOYMENT_LABEL)
    if owner:
        await deployment.reconcile(memo.kube, memo.config, namespace, owner, apply=False)


def _rolling(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """A strategy that rolls out, a recorded rollout, or a monitor whose retrain rolls out."""
    retrains = any(m.get("action") == "retrain" for m in spec.get("monitors") or [])
    strategy = (spec.get("strategy") or {}).get("type")
    return strategy in ("canary", "ab", "bluegreen") or bool(status.get("rollout")) or retrains


@kopf.timer(*DEPLOYMENTS.selector, interval=slo_interval(), when=_rolling)
async def rollout_check(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await deployment.check_rollout(memo.kube, memo.config, namespace, name)


def _monitored(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("monitors"))


@kopf.timer(*DEPLOYMENTS.selector, interval=monitors.monitor_interval(), when=_monitored)
async def drift_check(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await monitors.check_monitors(memo.kube, memo.config, namespace, name)


# --- admission ------------------------------------------------------------------------------
# Each handler id is the webhook URL path (manifests/webhooks.yaml names the same paths).


@kopf.on.mutate(*EXPERIMENTS.selector, id="stamp-experiment", operations=["CREATE", "UPDATE"])
def stamp_experiment(
    body: kopf.Body,
    old: kopf.Body | None,
    userinfo: dict[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    admission.stamp_experiment(
        memo.config, dict(body), _raw(old), admission.user_of(userinfo), patch
    )


@kopf.on.mutate(*DEPLOYMENTS.selector, id="stamp-deployment", operations=["CREATE", "UPDATE"])
def stamp_deployment(
    body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], patch: kopf.Patch, **_: Any
) -> None:
    admission.stamp_deployment(dict(body), _raw(old), admission.user_of(userinfo), patch)


@kopf.on.mutate(*MODELS.selector, id="stamp-model", operations=["CREATE", "UPDATE"])
async def stamp_model(
    body: kopf.Body,
    old: kopf.Body | None,
    userinfo: dict[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await admission.stamp_model(memo.kube, memo.config, dict(body), _raw(old), userinfo, patch)


@kopf.on.validate(*EXPERIMENTS.selector, id="validate-experiment", operations=["CREATE", "UPDATE"])
def validate_experiment(body: kopf.Body, old: kopf.Body | None, memo: kopf.Memo, **_: Any) -> None:
    admission.validate_experiment(memo.config, dict(body), _raw(old))


@kopf.on.validate(*MODELS.selector, id="validate-model", operations=["CREATE", "UPDATE"])
async def validate_model(
    body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], memo: kopf.Memo, **_: Any
) -> None:
    await admission.validate_model(memo.config, dict(body), _raw(old), admission.user_of(userinfo))


@kopf.on.validate(
    *MODELS.selector, id="validate-model-status", subresource="status",
    operations=["UPDATE"],
)  # fmt: skip
def validate_model_status(
    body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], memo: kopf.Memo, **_: Any
) -> None:
    admission.validate_model_status(memo.config, dict(body), _raw(old), admission.user_of(userinfo))


@kopf.on.validate(*DEPLOYMENTS.selector, id="validate-deployment", operations=["CREATE", "UPDATE"])
async def validate_deployment(
    body: kopf.Body, old: kopf.Body | None, memo: kopf.Memo, **_: Any
) -> None:
    await admission.validate_deployment(memo.kube, memo.config, dict(body), _raw(old))


def _raw(body: kopf.Body | None) -> dict[str, Any] | None:
    return dict(body) if body is not None else None
