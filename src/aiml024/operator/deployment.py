"""Deployment: SeldonDeployment + ServiceMonitor + PrometheusRule, readiness, rollouts.

`reconcile` asks which rollout this generation (or a retrain) asks for
(aiml024.reconcile.rollout.rollout_for), makes the predictor plan that follows it
(reconcile.deployment.plan_predictors), applies what the compiler makes of it (only when a
child's compiled spec changed: Seldon's own defaulting must not make us fight it) and mirrors
readiness, the rollout and the live traffic split. `check_rollout` (the rollout timer) observes
the predictors (Prometheus, or each predictor's exposition), reads the A/B outcomes from the
store, `advance`s the rollout, records status first, then moves live traffic (a JSON patch of
the SeldonDeployment's traffic, or a re-apply of the compiled plan on promotion), and emits
Events and audit entries.
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
from ..api import Deployment, DeploymentStatus, Experiment, Model
from ..api.common import DEFAULT_NAMESPACE
from ..api.deployment import AbResult, RolloutStatus
from ..api.labels import SPEC_HASH_ANNOTATION as SPEC_HASH
from ..api.plan import traffic as planned_traffic
from ..compiler import CompileError, compile_deployment
from ..policy import GateResult
from ..reconcile import deployment as deployment_rules
from ..reconcile import rollout as rollout_rules
from ..reconcile.clock import now as _now
from ..reconcile.deployment import live_split, seldon_ready
from . import outcomes, policy, slo
from .config import OperatorConfig
from .kube import (
    BY_KIND,
    DEPLOYMENTS,
    EXPERIMENTS,
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


async def _models(kube: Kube, dep: Deployment, *extra: str | None) -> dict[str, Model]:
    """The Models the Deployment's routes, its recorded rollout and `extra` name, as recorded
    now (absent ones left out)."""
    rollout = dep.status.rollout if dep.status else None
    names = {route.model for route in dep.spec.routes()} | {n for n in extra if n}
    if rollout is not None:
        names |= {n for n in (rollout.candidate, rollout.stable) if n}
    found = await asyncio.gather(*(kube.get(MODELS, dep.metadata.namespace, n) for n in names))
    return {m["metadata"]["name"]: Model.model_validate(m) for m in found if m is not None}


async def _retrain_candidate(kube: Kube, dep: Deployment) -> str | None:
    """The Model version a retrain monitor's Experiment registers (reconcile.rollout)."""
    names = {m.retrain.experiment for m in dep.spec.monitors if m.retrain is not None}
    if not names or dep.status is None or not dep.status.monitors:
        return None
    found = await asyncio.gather(*(kube.get(EXPERIMENTS, dep.metadata.namespace, n) for n in names))
    experiments = {
        e["metadata"]["name"]: Experiment.model_validate(e) for e in found if e is not None
    }
    return rollout_rules.retrain_candidate(dep, experiments)


async def _rollout(kube: Kube, dep: Deployment) -> tuple[RolloutStatus | None, dict[str, Model]]:
    """The rollout this generation asks for, and the Models it and the spec name."""
    retrain = await _retrain_candidate(kube, dep)
    models = await _models(kube, dep, retrain)
    previous = dep.status.rollout if dep.status else None
    return rollout_rules.rollout_for(dep, models, previous, _now(), retrain), models


async def deployment_policy_gate(
    kube: Kube,
    config: OperatorConfig,
    dep: Deployment,
    models: dict[str, Model] | None = None,
    rollout: RolloutStatus | None = None,
) -> GateResult:
    """The deployment policy for `dep` (serving `rollout`'s plan), with its Models (read
    unless given) and its namespace's labels as stored."""
    if models is None:
        models = await _models(kube, dep)
    ns = await kube.get(NAMESPACES, None, dep.metadata.namespace or DEFAULT_NAMESPACE) or {}
    labels = dict((ns.get("metadata") or {}).get("labels") or {})
    return await policy.deployment_gate(
        config,
        deployment_rules.policy_subject(dep, rollout),
        deployment_rules.routed_models(dep, models, rollout),
        labels,
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
    rollout, models = await _rollout(kube, dep)
    try:
        # The rollout (and a rollback) hold through re-applies: they are inputs to the plan.
        rolled_back = slo.rolled_back(dep) if rollout is None else False
        plan = deployment_rules.plan_predictors(dep, models, rolled_back, rollout)
        gate = await deployment_policy_gate(kube, config, dep, models, rollout)
        if gate.decision != "allow":
            raise deployment_rules.NotServable(
                "the deployment policy refuses it: " + "; ".join(gate.violations)
            )
    except deployment_rules.NotServable as waiting:
        status = deployment_rules.deployment_status(dep, None, None, _now(), str(waiting), rollout)
        if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is not None:
            kopf.warn(body, reason="WaitingForModel", message=str(waiting))
        if apply:  # waiting is temporary: look again later (handlers never sleep)
            raise kopf.TemporaryError(str(waiting), delay=config.retry_delay) from None
        return
    if apply:
        try:
            children = compile_deployment(dep, plan, config.compile)
        except CompileError as error:  # permanent until the spec changes (e.g. a refused field)
            status = deployment_rules.deployment_status(
                dep, None, None, _now(), str(error), rollout
            )
            if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is not None:
                kopf.warn(body, reason="InvalidSpec", message=str(error))
            return
        for child in children:
            await _apply(kube, body, child)
    seldon = await kube.get(SELDON, namespace, name)
    ready, endpoint, why = seldon_ready(seldon)
    status = deployment_rules.deployment_status(
        dep, plan if ready else None, endpoint, _now(), why, rollout
    )
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


# --- the rollout timer -----------------------------------------------------------------------


async def check_rollout(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> None:
    """One look at a Deployment's rollout (the timer's): converge live traffic on the plan,
    observe, advance, record, act."""
    try:
        await _check_rollout_once(kube, config, namespace, name)
    except Conflict:
        pass  # changed while judging: the next tick judges the fresh state


async def _check_rollout_once(
    kube: Kube, config: OperatorConfig, namespace: str, name: str
) -> None:
    body = await kube.get(DEPLOYMENTS, namespace, name)
    seldon = await kube.get(SELDON, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    if seldon is None or not seldon_ready(seldon)[0]:
        return
    dep = Deployment.model_validate(body)
    recorded = dep.status.rollout if dep.status else None
    rollout, models = await _rollout(kube, dep)
    if rollout is None:
        return
    if rollout != recorded:  # a new generation or retrain, a candidate (un)approved
        await reconcile(kube, config, namespace, name, apply=True)
        return
    live = live_split(seldon)
    # Decided, but the move did not land yet (or a reconcile served another split): land it.
    if await _converge(kube, config, dep, seldon, planned_traffic(dep, rollout=rollout), live):
        return
    if rollout.phase != "Progressing":
        return
    observed = await observe(config, dep, list(live)) if rollout.weight > 0 else {}
    ab = await _ab_result(config, dep, rollout)
    now = _now()
    after, events = rollout_rules.advance(dep, rollout, observed, now, ab)
    if after.weight == 100 and rollout.weight < 100:  # the candidate alone: may it be?
        gate = await deployment_policy_gate(kube, config, dep, models, after.model_copy(
            update={"phase": "Promoted"}
        ))  # fmt: skip
        if gate.decision != "allow":
            after, events = rollout_rules.advance(
                dep, rollout, observed, now, ab, candidate_allowed=False
            )
    previous = dep.status or DeploymentStatus()
    status = rollout_rules.status_after_rollout(dep, previous, after, events, observed, now)
    try:
        status.models = deployment_rules.plan_predictors(dep, models, rollout=after).digests()
    except deployment_rules.NotServable:
        pass
    # Record the decision first: a crash after it still ends with the traffic moved (above).
    if await kube.replace_status(DEPLOYMENTS, body, status.wire()) is None or not events:
        return
    await _converge(kube, config, dep, seldon, planned_traffic(dep, rollout=after), live)
    for event in events:
        (kopf.warn if event.warning else kopf.info)(
            body, reason=event.reason, message=event.message
        )
    records = _audit_records(config, body, after, events, live, status.traffic, previous.models)
    if records:
        await record_audit(config, body, records)


async def _converge(
    kube: Kube,
    config: OperatorConfig,
    dep: Deployment,
    seldon: Obj,
    planned: dict[str, int],
    live: dict[str, int],
) -> bool:
    """Move live traffic to `planned`: a traffic patch when the same predictors serve, else
    (a promotion, a candidate added or dropped) a re-apply of the compiled plan. Whether it
    acted."""
    if set(planned) != set(live):
        await reconcile(kube, config, dep.metadata.namespace or DEFAULT_NAMESPACE,
                        dep.metadata.name, apply=True)  # fmt: skip
        return True
    if planned != live:
        meta = seldon["metadata"]
        await kube.json_patch(
            SELDON, meta.get("namespace"), meta["name"], slo.traffic_patch(seldon, planned)
        )
        return True
    return False


async def _ab_result(
    config: OperatorConfig, dep: Deployment, rollout: RolloutStatus
) -> AbResult | None:
    """The sequential test on the outcomes in the store; None when they cannot be read."""
    spec = dep.spec.strategy.ab
    if rollout.strategy != "ab" or spec is None:
        return None
    namespace = dep.metadata.namespace or DEFAULT_NAMESPACE
    try:
        a, b = await asyncio.to_thread(
            outcomes.outcomes, config.compile.artifact_store, namespace, dep.metadata.name
        )
    except Exception as error:  # any store failure: the test waits for the next look
        log.warning("cannot read A/B outcomes of deployment %s: %s", dep.metadata.name, error)
        return None
    return rollout_rules.ab_test(
        a, b, spec.alpha, spec.min_samples, spec.max_samples, previous=rollout.ab
    )


def _audit_records(
    config: OperatorConfig,
    body: Obj,
    rollout: RolloutStatus,
    events: list[rollout_rules.RolloutEvent],
    before: dict[str, int],
    after: dict[str, int],
    models: dict[str, str],
) -> list[audit.Record]:
    subject, actor = audit.subject_of(body), config.operator_user
    records = []
    for event in events:
        if event.reason == slo.ROLLED_BACK:
            reason = event.cause or event.message
            records.append(audit.rollback_record(subject, reason, before, after, models, actor))
        elif event.reason in ("Promoted", "Concluded"):
            records.append(
                audit.rollout_record(
                    subject,
                    event.reason,
                    rollout.candidate,
                    event.message,
                    before,
                    after,
                    models,
                    actor,
                )  # fmt: skip
            )
    return records


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
