"""Deployment: SeldonDeployment + ServiceMonitor + PrometheusRule, readiness, SLO rollback.

`reconcile` makes the predictor plan (aiml024.reconcile.deployment.plan_predictors, with this
generation's rollback as an input), applies what the compiler makes of it (only when a child's
compiled spec changed: Seldon's own defaulting must not make us fight it) and mirrors readiness
and the live traffic split. `check_slo` judges a running canary and, on a breach, records the
rollback and moves live traffic to the rolled-back plan's split.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import aiohttp
import kopf

from .. import audit
from ..api import Deployment, DeploymentStatus, Model
from ..api.common import DEFAULT_NAMESPACE
from ..api.labels import SPEC_HASH_ANNOTATION as SPEC_HASH
from ..api.plan import traffic as planned_traffic
from ..compiler import CompileError, compile_deployment
from ..policy import GateResult
from ..reconcile import deployment as deployment_rules
from ..reconcile.clock import now as _now
from ..reconcile.deployment import live_split, seldon_ready
from . import policy, slo
from .config import OperatorConfig
from .kube import (
    BY_KIND,
    DEPLOYMENTS,
    MODELS,
    NAMESPACES,
    SELDON,
    Conflict,
    Kube,
    controlled_by,
    settle,
)
from .model import record_audit

Obj = dict[str, Any]
log = logging.getLogger(__name__)


def _spec_hash(manifest: Obj) -> str:
    return hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]


async def _models(kube: Kube, dep: Deployment) -> dict[str, Model]:
    """The Models the Deployment's routes name, as recorded now (absent ones left out)."""
    names = {route.model for route in dep.spec.routes()}
    found = await asyncio.gather(*(kube.get(MODELS, dep.metadata.namespace, n) for n in names))
    return {m["metadata"]["name"]: Model.model_validate(m) for m in found if m is not None}


async def deployment_policy_gate(
    kube: Kube, config: OperatorConfig, dep: Deployment, models: dict[str, Model] | None = None
) -> GateResult:
    """The deployment policy for `dep`, with its Models (read unless given) and its
    namespace's labels as stored."""
    if models is None:
        models = await _models(kube, dep)
    ns = await kube.get(NAMESPACES, None, dep.metadata.namespace or DEFAULT_NAMESPACE) or {}
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
    await settle(
        f"deployment {name}", lambda: _reconcile_once(kube, config, namespace, name, apply)
    )


async def _reconcile_once(
    kube: Kube, config: OperatorConfig, namespace: str, name: str, apply: bool
) -> None:
    body = await kube.get(DEPLOYMENTS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    dep = Deployment.model_validate(body)
    try:
        models = await _models(kube, dep)
        # This generation's rollback holds through re-applies: it is an input to the plan.
        plan = deployment_rules.plan_predictors(dep, models, rolled_back=slo.rolled_back(dep))
        gate = await deployment_policy_gate(kube, config, dep, models)
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
        try:
            children = compile_deployment(dep, plan, config.compile)
        except CompileError as error:  # permanent until the spec changes (e.g. a refused field)
            status = deployment_rules.deployment_status(dep, None, None, _now(), str(error))
            if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is not None:
                kopf.warn(body, reason="InvalidSpec", message=str(error))
            return
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
    elif not controlled_by(live, owner):
        message = (
            f"{manifest['kind']} {meta['name']} exists but was not created for this Deployment "
            "(no owner reference to it); it is never adopted: delete it to serve"
        )
        kopf.warn(owner, reason="NotOwned", message=message)
        raise kopf.TemporaryError(message, delay=30)
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
    rolled_back = planned_traffic(dep, rolled_back=True)
    if slo.rolled_back(dep):
        if traffic != rolled_back:  # decided, but the traffic move did not land yet
            await kube.json_patch(SELDON, namespace, name, slo.traffic_patch(seldon, rolled_back))
        return
    if traffic.get("canary", 0) <= 0:
        return
    observed = await observe(config, dep, list(traffic))
    breach = slo.slo_breach(dep.spec.slo, traffic, observed)
    status = slo.status_after_slo(dep, dep.status or DeploymentStatus(), breach, observed, _now())
    # Record the decision first: a crash after it still ends with the traffic moved (above).
    if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is None or breach is None:
        return
    await kube.json_patch(SELDON, namespace, name, slo.traffic_patch(seldon, rolled_back))
    kopf.warn(body, reason="RolledBack", message=f"traffic moved back to stable: {breach.reason}")
    models = (dep.status or DeploymentStatus()).models
    record = audit.rollback_record(
        audit.subject_of(body), breach.reason, traffic, rolled_back, models, config.operator_user
    )
    await record_audit(config, body, [record])


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
