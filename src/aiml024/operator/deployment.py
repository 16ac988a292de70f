"""Deployment: SeldonDeployment + ServiceMonitor + PrometheusRule, readiness, SLO rollback.

`reconcile` applies the compiled children (only when their compiled spec changed: Seldon's own
defaulting must not make us fight it) and mirrors readiness and the live traffic split.
`check_slo` judges a running canary and moves its traffic back to stable on a breach.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from ..api import Deployment, DeploymentStatus, Model
from ..compiler import ServedModel, compile_deployment
from ..policy import GateResult
from ..reconcile import deployment as deployment_rules
from . import policy, slo
from .config import OperatorConfig
from .kube import BY_KIND, DEPLOYMENTS, MODELS, NAMESPACES, SELDON, Conflict, Kube
from .rules import live_split, seldon_ready

Obj = dict[str, Any]
SPEC_HASH = "aiml024.io/spec-hash"
log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _spec_hash(manifest: Obj) -> str:
    return hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]


async def _models(kube: Kube, dep: Deployment) -> dict[str, Model]:
    strategy = dep.spec.strategy
    names = {dep.spec.model, *(s.model for s in (strategy.canary, strategy.shadow) if s)}
    found = await asyncio.gather(*(kube.get(MODELS, dep.metadata.namespace, n) for n in names))
    return {m["metadata"]["name"]: Model.model_validate(m) for m in found if m is not None}


async def deployment_policy_gate(kube: Kube, config: OperatorConfig, dep: Deployment) -> GateResult:
    """The deployment policy for `dep`, with its Models and its namespace's labels as stored."""
    models = await _models(kube, dep)
    ns = await kube.get(NAMESPACES, None, dep.metadata.namespace or "default") or {}
    labels = dict((ns.get("metadata") or {}).get("labels") or {})
    return await policy.deployment_gate(
        config, dep, deployment_rules.routed_models(dep, models), labels
    )


async def model_changed(kube: Kube, config: OperatorConfig, namespace: str, model: str) -> None:
    """Re-judge the Deployments that route to `model` (their status only: what serves changes
    through a Deployment's own spec, or an SLO rollback)."""
    for body in await kube.list(DEPLOYMENTS, namespace):
        try:
            routes = Deployment.model_validate(body).spec.routes()
        except ValueError:
            continue
        if any(route.model == model for route in routes):
            await reconcile(kube, config, namespace, body["metadata"]["name"], apply=False)


async def reconcile(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, apply: bool = True
) -> None:
    for _attempt in range(5):
        try:
            await _reconcile_once(kube, config, namespace, name, apply)
            return
        except Conflict:
            continue
    raise kopf.TemporaryError(f"deployment {name} kept changing while reconciling", delay=1)


async def _reconcile_once(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, apply: bool
) -> None:
    body = await kube.get(DEPLOYMENTS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    dep = Deployment.model_validate(body)
    try:
        plan = deployment_rules.plan_predictors(dep, await _models(kube, dep))
        gate = await deployment_policy_gate(kube, config, dep)
        if gate.decision != "allow":
            raise deployment_rules.NotServable(
                "the deployment policy refuses it: " + "; ".join(gate.violations)
            )
    except deployment_rules.NotServable as waiting:
        status = deployment_rules.deployment_status(dep, None, None, _now(), str(waiting))
        if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is not None:
            kopf.warn(body, reason="WaitingForModel", message=str(waiting))
        if apply:  # waiting is temporary: look again later (handlers never sleep)
            raise kopf.TemporaryError(str(waiting), delay=config.retry_delay) from None
        return
    if apply:
        served = {p.model: ServedModel(p.model, p.artifact_uri, p.sha256, p.task) for p in plan}
        children = compile_deployment(dep, served, config.compile)
        if slo.rolled_back(dep):  # keep this generation's rollback through re-applies
            children[0] = slo.with_rollback(children[0])
        for child in children:
            await _apply(kube, body, child)
    seldon = await kube.get(SELDON, namespace, name)
    ready, endpoint, why = seldon_ready(seldon)
    status = deployment_rules.deployment_status(dep, plan if ready else None, endpoint, _now(), why)
    if ready:
        status.traffic = live_split(seldon)  # what is routed now, not what was planned
    before = dep.status.phase if dep.status else None
    if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is not None:
        if status.phase == "Serving" and before != "Serving":
            kopf.info(body, reason="Serving", message=f"serving at {endpoint}")


async def _apply(kube: Kube, owner: Obj, manifest: Obj) -> None:
    """Create the child, or update its spec when what we compile for it changed."""
    res = BY_KIND[manifest["kind"]]
    meta = manifest["metadata"]
    meta["namespace"] = owner["metadata"]["namespace"]
    meta.setdefault("annotations", {})[SPEC_HASH] = _spec_hash(manifest)
    kopf.append_owner_reference(manifest, owner=kopf.Body(owner))
    live, created = await kube.ensure(res, manifest)
    if created:
        kopf.info(owner, reason="Created", message=f"created {manifest['kind']} {meta['name']}")
    elif (live["metadata"].get("annotations") or {}).get(SPEC_HASH) != meta["annotations"][
        SPEC_HASH
    ]:
        patch = {
            "metadata": {
                "annotations": {SPEC_HASH: meta["annotations"][SPEC_HASH]},
                "labels": meta.get("labels", {}),
            },
            "spec": _replace(live["spec"], manifest["spec"]),
        }
        await kube.merge_patch(res, meta["namespace"], meta["name"], patch)
        kopf.info(owner, reason="Updated", message=f"updated {manifest['kind']} {meta['name']}")


def _replace(old: Obj, new: Obj) -> Obj:
    """Merge patch making `old` equal to `new` at the top level of spec."""
    return {**{k: None for k in old if k not in new}, **new}


# --- SLO -----------------------------------------------------------------------------------


async def check_slo(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    try:
        await _check_slo_once(kube, config, namespace, name)
    except Conflict:
        pass  # changed while judging: the next tick judges the fresh state


async def _check_slo_once(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    body = await kube.get(DEPLOYMENTS, namespace, name)
    seldon = await kube.get(SELDON, namespace, name)
    if body is None or seldon is None or not seldon_ready(seldon)[0]:
        return
    dep = Deployment.model_validate(body)
    traffic = live_split(seldon)
    if slo.rolled_back(dep):
        if traffic.get("canary", 0) > 0:  # decided, but the traffic move did not land yet
            await kube.json_patch(SELDON, namespace, name, slo.rollback_patch(seldon))
        return
    if traffic.get("canary", 0) <= 0:
        return
    observed = await observe(config, dep, list(traffic))
    breach = slo.slo_breach(dep.spec.slo, traffic, observed)
    status = slo.status_after_slo(dep, dep.status or DeploymentStatus(), breach, observed, _now())
    # Record the decision first: a crash after it still ends with the traffic moved (above).
    if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is None or breach is None:
        return
    await kube.json_patch(SELDON, namespace, name, slo.rollback_patch(seldon))
    kopf.warn(body, reason="RolledBack", message=f"traffic moved back to stable: {breach.reason}")


async def observe(
    config: OperatorConfig, dep: Deployment, predictors: list[str]
) -> dict[str, slo.Observation]:
    """Recent latency and errors per predictor; {} when nothing could be read."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            if config.prometheus_url:
                answers = {}
                for field, query in slo.prometheus_queries(dep).items():
                    url = config.prometheus_url.rstrip("/") + "/api/v1/query"
                    async with session.get(url, params={"query": query}) as rsp:
                        rsp.raise_for_status()
                        answers[field] = await rsp.json()
                return slo.observations_from_prometheus(answers)
            observed = {}
            for predictor in predictors:
                url = config.metrics_url.format(
                    deployment=dep.metadata.name,
                    predictor=predictor,
                    namespace=dep.metadata.namespace,
                )
                async with session.get(url) as rsp:
                    rsp.raise_for_status()
                    seen = slo.observation_from_text(await rsp.text())
                if seen is not None:
                    observed[predictor] = seen
            return observed
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning("cannot read metrics for deployment %s: %s", dep.metadata.name, error)
            return {}
