"""The embedded control plane: reconciles applied objects on this machine until they settle.

The same decisions as the operator (aiml024.reconcile), the same compiled Workflow (run by the
local executor), the same Rego (evaluated in-process) and the same MLServer runtime.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from .. import __version__, audit
from ..api import Deployment, Experiment, Model, ModelStatus
from ..api.common import (
    APPLIED_BY,
    APPROVALS,
    BREAK_GLASS_RECORDS,
    DEFAULT_NAMESPACE,
    EXPERIMENT_LABEL,
)
from ..api.deployment import RolloutStatus
from ..api.model import Approval
from ..compiler import CompileError, compile_experiment
from ..files import write_atomic
from ..policy import (
    GateResult,
    counted_break_glass,
    default_policy_dir,
    deployment_input,
    evaluate,
    evaluate_deployment,
)
from ..reconcile import approvals as approval_rules
from ..reconcile import break_glass as break_glass_rules
from ..reconcile import deployment as deployment_rules
from ..reconcile import experiment as experiment_rules
from ..reconcile import model as model_rules
from ..reconcile import rollout as rollout_rules
from ..reconcile import slo as slo_rules
from ..reconcile.clock import now as _now
from ..signing import (
    ApproverRegistry,
    SignedApproval,
    SigningError,
    annotation_for,
    default_registry_path,
    is_approval_annotation,
    load_registry,
    sign_approval,
    verify,
)
from . import controller, watch
from . import server as model_server
from .executor import LocalExecutor, WorkflowRun
from .store import CONTROLLER_OWNER, Store


# Who is acting: there is no authentication on one machine, so the OS login is the identity
# (AIML024_USER overrides it, e.g. for a second person on a shared box or in demos).
def current_user() -> str:
    return os.environ.get("AIML024_USER") or getpass.getuser()


class ApplyError(RuntimeError):
    """An object could not be reconciled; the message says which and why."""


@dataclass
class Progress:
    """Callbacks the CLI uses to draw progress; all optional."""

    step: Callable[[str, str, str], None] = lambda _exp, _task, _phase: None
    trial: Callable[[str, dict[str, Any]], None] = lambda _exp, _event: None
    message: Callable[[str], None] = lambda _text: None


@dataclass
class ApplyReport:
    experiments: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    deployments: dict[str, str] = field(default_factory=dict)  # name -> endpoint


class LocalControlPlane:
    def __init__(self, home: Path, policy_dir: Path | None = None):
        self.home = home
        self.store = Store(home)
        self.artifacts = home / "artifacts"
        self.policy_dir = policy_dir or default_policy_dir()

    # -- apply ----------------------------------------------------------------------------------

    def apply(
        self, objects: list[Experiment | Model | Deployment], progress: Progress
    ) -> ApplyReport:
        report = ApplyReport()
        with self.store.exclusive("aiml024 apply"):
            stored = []
            for obj in objects:
                manifest = obj.wire()
                manifest.pop("status", None)
                self._stamp_identity(manifest)
                saved, _changed = self.store.apply(manifest)
                stored.append(saved)
            # Experiments first: they register the Models that Deployments serve.
            for saved in sorted(
                stored, key=lambda o: ["Experiment", "Model", "Deployment"].index(o["kind"])
            ):
                name = saved["metadata"]["name"]
                if saved["kind"] == "Experiment":
                    model_name = self.reconcile_experiment(name, progress)
                    report.experiments.append(name)
                    if model_name:
                        report.models.append(model_name)
                elif saved["kind"] == "Model":
                    self.reconcile_model(name)
                    report.models.append(name)
                else:
                    report.deployments[name] = self.reconcile_deployment(name, progress)
        return report

    def _stamp_identity(self, manifest: dict[str, Any]) -> None:
        """As the admission webhook does, from the store's record, never from the manifest: an
        Experiment's or a Deployment's author is whoever last changed its spec; a Model's owner
        is whoever first applied it."""
        meta = manifest["metadata"]
        before = self.store.find(manifest["kind"], meta["name"], meta.get("namespace") or "default")
        annotations = meta.setdefault("annotations", {})
        recorded = ((before or {}).get("metadata") or {}).get("annotations") or {}
        if manifest["kind"] in ("Experiment", "Deployment"):
            # A Deployment's author wrote its monitors' retrain instructions: the retrained
            # Model is theirs (aiml024.local.watch).
            unchanged = before is not None and before.get("spec") == manifest.get("spec")
            author = recorded.get(APPLIED_BY) if unchanged else None
            annotations[APPLIED_BY] = author or current_user()
        elif manifest["kind"] == "Model":
            owner = (before or {}).get("spec", {}).get("owner") if before else current_user()
            manifest["spec"]["owner"] = owner
            # Approval and break-glass records are written by `approve` and `promote
            # --break-glass` only; signed approvals anyone may add.
            for key in (APPROVALS, BREAK_GLASS_RECORDS):
                annotations.pop(key, None)
                if key in recorded:
                    annotations[key] = recorded[key]
            for key, value in recorded.items():
                if is_approval_annotation(key):
                    annotations.setdefault(key, value)

    # -- experiments ----------------------------------------------------------------------------

    def reconcile_experiment(self, name: str, progress: Progress) -> str | None:
        exp = Experiment.model_validate(self.store.get("Experiment", name))
        try:
            workflow = compile_experiment(exp)
        except CompileError as error:
            status = experiment_rules.invalid_spec_status(exp, str(error), _now())
            self._set_status(exp, status.wire())
            self.store.record_event(exp.wire(), "Warning", "InvalidSpec", str(error))
            raise ApplyError(f"experiment {name}: {error}") from None
        wf_name = workflow["metadata"]["name"]
        current = exp.status
        if (
            current is not None
            and current.observed_generation == exp.metadata.generation
            and current.phase == "Succeeded"
            and current.model_name
        ):
            progress.message(f"experiment {name} is up to date ({wf_name} succeeded)")
            return current.model_name

        self.store.apply(workflow)
        self.store.record_event(
            exp.wire(), "Normal", "WorkflowCreated", f"created workflow {wf_name}"
        )
        best: dict[str, Any] = {"trials": 0, "best": None}

        def on_change(run: WorkflowRun) -> None:
            self.store.update_status("Workflow", wf_name, run.status())
            for node in run.nodes.values():
                progress.step(name, node.name, node.phase)
            status = experiment_rules.experiment_status(
                exp, wf_name, run.status(), _now(), (best["trials"], best["best"])
            )
            self._set_status(exp, status.wire())

        def on_event(_task: str, event: dict[str, Any]) -> None:
            if event.get("event") == "trial":
                best["trials"] = int(event.get("number", 0)) + 1
                best["best"] = event.get("best")
                progress.trial(name, event)

        rundir = self.home / "runs" / wf_name
        if rundir.exists():
            shutil.rmtree(rundir)
        executor = LocalExecutor(rundir)
        run = executor.run(
            workflow,
            parameters={
                "artifact-store": self.artifacts.as_uri(),
                "study-storage": "",
                "code-version": __version__,
            },
            listener=on_event,
            on_change=on_change,
        )
        exp = Experiment.model_validate(self.store.get("Experiment", name))
        if run.phase != "Succeeded":
            message = run.message or "workflow failed"
            self.store.record_event(exp.wire(), "Warning", "WorkflowFailed", message)
            raise ApplyError(f"experiment {name}: {message}")
        model_name = self._register(exp, wf_name)
        status = experiment_rules.experiment_status(exp, wf_name, run.status(), _now())
        status.model_name = model_name
        self._set_status(exp, status.wire())
        self.store.record_event(
            exp.wire(), "Normal", "ModelRegistered", f"registered model {model_name}"
        )
        self.reconcile_model(model_name)
        return model_name

    def _register(self, exp: Experiment, wf_name: str) -> str:
        """Register this generation's Model version from the record the register step wrote
        under the run's own root in the artifact store."""
        store = self.artifacts.as_uri()
        uri = experiment_rules.registration_uri(store, exp, wf_name)
        try:
            with fsspec.open(uri, "rb") as handle:
                record = json.load(handle)
            model = experiment_rules.model_to_register(exp, record, store, wf_name)
        except (OSError, ValueError) as error:
            raise ApplyError(f"experiment {exp.metadata.name}: cannot register: {error}") from None
        existing = self.store.find("Model", model.metadata.name)
        if existing is not None:
            conflict = experiment_rules.registration_conflict(Model.model_validate(existing), model)
            if conflict:
                raise ApplyError(f"experiment {exp.metadata.name}: {conflict}")
            return model.metadata.name
        spec_manifest = model.wire()
        status = spec_manifest.pop("status", {})
        self.store.apply(spec_manifest)
        self.store.update_status("Model", model.metadata.name, status)
        return model.metadata.name

    # -- models ---------------------------------------------------------------------------------

    def reconcile_model(self, name: str) -> Model:
        model = model_rules.with_source_artifact(
            Model.model_validate(self.store.get("Model", name))
        )
        before = model.status or ModelStatus()
        approvals, ignored = approval_rules.model_approvals(model, self._registry(), _now())
        broken, not_counted = counted_break_glass(model, model.spec.stage)
        gate = evaluate(model, model.spec.stage, self.policy_dir, approvals, break_glass=broken)
        model.status = before.model_copy(update={"approvals": approvals})
        status = model_rules.status_after_gate(model, gate, _now())
        self._set_status(model, status.wire())
        assert status.policy is not None
        self.store.record_event(model.wire(), *model_rules.gate_event(status.policy))
        for why in ignored:
            self.store.record_event(model.wire(), "Warning", "ApprovalIgnored", why)
        for why in not_counted:
            self.store.record_event(model.wire(), "Warning", "BreakGlassIgnored", why)
        if broken is not None and break_glass_rules.newly_counted(before, status):
            self.store.record_event(
                model.wire(), "Warning", "BreakGlass", break_glass_rules.event_message(status)
            )
        # The audit log (aiml024.audit) in the state directory, each entry mirrored as an event.
        records = audit.gate_records(
            audit.subject_of(model.wire()), before, status, current_user(),
            break_glass=broken, overridden=gate.overridden,
        )  # fmt: skip
        audit.record(
            self.home.as_uri(),
            records,
            mirror=lambda entry: self.store.record_event(model.wire(), *audit.event(entry)),
        )
        return Model.model_validate(self.store.get("Model", name))

    def _registry(self) -> ApproverRegistry | None:
        """The approvers registry (signing.default_registry_path), when this machine has one."""
        path = default_registry_path(self.policy_dir)
        if not path.exists():
            return None
        try:
            return load_registry(path)
        except SigningError as error:
            raise ApplyError(str(error)) from None

    def promote(
        self, name: str, stage: str, break_glass: str | None = None, user: str | None = None
    ) -> Model:
        """Ask for `stage`. As the admission webhook refuses a stage change the policy denies,
        a denied request leaves spec.stage as it was (the decision is still recorded).

        With `break_glass` (a written justification) `user` (default: current_user()) pushes
        past the quality rules, as the webhook records it for the verb break-glass: not the
        author, at least BREAK_GLASS_MIN_JUSTIFICATION characters, for this artifact digest
        and `stage` (no role: one machine has no authorizer). A request the policy still
        denies (an integrity rule) leaves no break-glass record on the Model, as the webhook
        refuses it in a cluster; its decision and audit entries still show the attempt."""
        with self.store.exclusive(f"aiml024 promote model/{name}"):
            manifest = self.store.get("Model", name)
            before = manifest["spec"].get("stage", "staging")
            annotations = manifest["metadata"].setdefault("annotations", {})
            recorded = annotations.get(BREAK_GLASS_RECORDS)
            if break_glass is not None:
                model = model_rules.with_source_artifact(Model.model_validate(manifest))
                record, problem = break_glass_rules.break_glass_record(
                    model, user or current_user(), stage, break_glass, _now()
                )
                if record is None:
                    raise ApplyError(problem or "cannot break the glass")
                records = break_glass_rules.with_record(annotations, record)
                annotations[BREAK_GLASS_RECORDS] = json.dumps(records, separators=(",", ":"))
            manifest["spec"]["stage"] = stage
            self.store.apply(manifest)
            model = self.reconcile_model(name)
            if model.status and model.status.policy and model.status.policy.decision == "deny":
                manifest["spec"]["stage"] = before
                if recorded is None:
                    annotations.pop(BREAK_GLASS_RECORDS, None)
                else:
                    annotations[BREAK_GLASS_RECORDS] = recorded
                self.store.apply(manifest)
                model = Model.model_validate(self.store.get("Model", name))
            return model

    def approve(
        self, name: str, stage: str, user: str, comment: str = "", key: str | None = None
    ) -> Model:
        """Approve as `user` (no authentication on one machine), or, with `key` or wherever an
        approvers registry exists, by a signed statement verified against that registry."""
        with self.store.exclusive(f"aiml024 approve model/{name}"):
            manifest = self.store.get("Model", name)
            model = Model.model_validate(manifest)
            status = model.status or ModelStatus()
            registry = self._registry()
            counted, _ = approval_rules.model_approvals(model, registry, _now())
            annotations = manifest["metadata"].setdefault("annotations", {})
            if key is not None or registry is not None:
                signed = self._signed(model, stage, comment, key, registry, counted)
                annotations.update([annotation_for(signed)])
                what = f"key {signed.key_id} signed stage {stage}"
            else:
                record, problem = approval_rules.approval_record(
                    model, user, stage, _now(), comment, counted=counted
                )
                if record is None:
                    raise ApplyError(problem or "cannot approve")
                records = approval_rules.recorded_approvals(annotations) + [record]
                annotations[APPROVALS] = json.dumps(records, separators=(",", ":"))
                what = f"{user} approved stage {stage}"
            self.store.apply(manifest)
            self.store.record_event(model.wire(), "Normal", "Approved", f"{what} ({status.sha256})")
            return self.reconcile_model(name)

    def _signed(
        self,
        model: Model,
        stage: str,
        comment: str,
        key: str | None,
        registry: ApproverRegistry | None,
        counted: list[Approval],
    ) -> SignedApproval:
        """Sign the approval and check, before storing it, that it will count."""
        sha = (model.status or ModelStatus()).sha256
        if not sha:
            raise ApplyError(f"model {model.metadata.name} has no registered artifact to approve")
        if registry is None:
            raise ApplyError(
                f"no approvers registry at {default_registry_path(self.policy_dir)}: a signed "
                "approval can only be verified against one (aiml024 keys create --register)"
            )
        try:
            signed = sign_approval(model.metadata.name, DEFAULT_NAMESPACE, sha, stage, comment, key)
        except SigningError as error:
            raise ApplyError(str(error)) from None
        approval, why = verify(
            signed, registry, model.metadata.name, DEFAULT_NAMESPACE, sha, _now()
        )
        if approval is None:
            raise ApplyError(why or "the signed approval does not verify")
        problem = approval_rules.approval_problem(model, approval.user, stage, counted)
        if problem:
            raise ApplyError(problem)
        return signed

    # -- deployments ----------------------------------------------------------------------------

    def reconcile_deployment(self, name: str, progress: Progress) -> str:
        """Serve the Deployment's plan (its rollout included) and record it; start the
        background controller when the Deployment needs watching."""
        url = self.serve(name, say=progress.message, force=False)
        dep = Deployment.model_validate(self.store.get("Deployment", name))
        if watch.needs_watching(dep):
            controller.start_controller(self.home)
        return url

    def serve(
        self, name: str, say: Callable[[str], None] = lambda _t: None, force: bool = False
    ) -> str:
        """Make the model server serve what the plan asks for now (this generation's rollout,
        its rollback), restarting it only when that differs from what it serves."""
        dep = Deployment.model_validate(self.store.get("Deployment", name))
        models = {m["metadata"]["name"]: Model.model_validate(m) for m in self.store.list("Model")}
        experiments = {
            e["metadata"]["name"]: Experiment.model_validate(e)
            for e in self.store.list("Experiment")
        }
        previous = dep.status.rollout if dep.status else None
        candidate = rollout_rules.retrain_candidate(dep, experiments)
        rollout = rollout_rules.rollout_for(dep, models, previous, _now(), candidate)
        try:
            plan = deployment_rules.plan_predictors(
                dep, models, rolled_back=slo_rules.rolled_back(dep), rollout=rollout
            )
            gate = self.deployment_gate(dep, models, rollout)
            if gate.decision != "allow":
                raise deployment_rules.NotServable(
                    "the deployment policy refuses it: " + "; ".join(gate.violations)
                )
        except deployment_rules.NotServable as waiting:
            status = deployment_rules.deployment_status(
                dep, None, None, _now(), str(waiting), rollout
            )
            self.set_status(dep, status)
            self.store.record_event(dep.wire(), "Warning", "WaitingForModel", str(waiting))
            raise ApplyError(f"deployment {name}: {waiting}") from None

        info = self.server_info(name)
        serving = (
            info is not None
            and model_server.server_alive(info)
            and info.digests == plan.digests()
            and info.traffic == plan.traffic()
        )
        if serving and not force:
            assert info is not None
            status = deployment_rules.deployment_status(dep, plan, info.url, _now(), None, rollout)
            if dep.status != status:
                self.set_status(dep, status)
            say(f"deployment {name} is already serving at {info.url}")
            return info.url
        if info:
            model_server.stop_server(info)
        say(f"starting MLServer for deployment {name}: {plan.describe()}")
        for predictor in plan:
            self._check_local(predictor.model.artifact_uri)
        try:
            info = model_server.start_server(
                plan,
                self.home / "servers" / name,
                # The same port again: the Deployment's endpoint outlives a restart.
                http_port=info.http_port if info else None,
                request_log=watch.log_root(self, name),
            )
        except Exception as error:
            status = deployment_rules.deployment_status(
                dep, None, None, _now(), f"server failed: {error}", rollout
            )
            self.set_status(dep, status)
            raise ApplyError(
                f"deployment {name}: the model server did not start: {error}"
            ) from None
        write_atomic(self._server_file(name), info.model_dump_json(indent=2))
        status = deployment_rules.deployment_status(dep, plan, info.url, _now(), None, rollout)
        self.set_status(dep, status)
        self.store.record_event(dep.wire(), "Normal", "Serving", f"serving {plan.describe()}")
        return info.url

    def deployment_gate(
        self, dep: Deployment, models: dict[str, Model], rollout: RolloutStatus | None
    ) -> GateResult:
        """The deployment policy on what the plan serves while `rollout` runs. One machine has
        no Namespace objects, so no namespace is labelled an environment."""
        subject = deployment_rules.policy_subject(dep, rollout)
        routed = deployment_rules.routed_models(dep, models, rollout)
        return evaluate_deployment(deployment_input(subject, routed, {}), self.policy_dir)

    def server_info(self, name: str) -> model_server.ServerInfo | None:
        path = self._server_file(name)
        if not path.exists():
            return None
        return model_server.ServerInfo.model_validate_json(path.read_text())

    def _server_file(self, name: str) -> Path:
        return self.home / "servers" / f"{name}.json"

    def _check_local(self, artifact_uri: str) -> None:
        if not artifact_uri.startswith("file://"):
            raise ApplyError(
                f"the local control plane serves file:// artifacts, not {artifact_uri}"
            )

    # -- between applies: the background controller's work ---------------------------------------

    @property
    def user(self) -> str:
        return current_user()

    def tick(self, now: Any = None, say: Callable[[str], None] = lambda _t: None) -> bool:
        """One look at every Deployment (rollouts, due monitors, retraining), as the operator's
        timers do; True while some Deployment still needs watching. Skips, returning True,
        while a user's command holds the store."""
        with self.store.exclusive(f"{CONTROLLER_OWNER} tick", wait_for_controller=False):
            needed = False
            for manifest in self.store.list("Deployment"):
                name = manifest["metadata"]["name"]
                try:
                    watch.watch(self, name, now or _now(), say=say)
                except ApplyError as error:
                    say(str(error))
                except Exception as error:  # one Deployment's failure must not stop the rest
                    say(f"deployment {name}: {type(error).__name__}: {error}")
                    self.store.record_event(
                        manifest, "Warning", "WatchFailed", f"{type(error).__name__}: {error}"
                    )
                dep = Deployment.model_validate(self.store.get("Deployment", name))
                needed = needed or watch.needs_watching(dep)
            return needed

    def run_monitors(
        self, name: str, now: Any = None, say: Callable[[str], None] = lambda _t: None
    ) -> watch.WatchReport:
        """Run every monitor of Deployment `name` now, whatever its schedule, then look at its
        rollout (`aiml024 monitor run`)."""
        with self.store.exclusive(f"aiml024 monitor run deployment/{name}"):
            dep = Deployment.model_validate(self.store.get("Deployment", name))
            if not dep.spec.monitors:
                raise ApplyError(f"deployment {name} has no monitors")
            return watch.watch(self, name, now or _now(), force_monitors=True, say=say)

    def retrain(self, experiment: str, say: Callable[[str], None]) -> None:
        """Train the Experiment's new generation (a monitor's retrain) and gate its Model."""
        try:
            model = self.reconcile_experiment(experiment, Progress(message=say))
        except ApplyError as error:
            say(f"retraining failed: {error}")
            return
        say(f"retrained experiment {experiment}: registered model {model}")

    # -- delete ---------------------------------------------------------------------------------

    def delete(self, kind: str, name: str) -> bool:
        with self.store.exclusive(f"aiml024 delete {kind.lower()}/{name}"):
            if kind == "Deployment":
                info = self.server_info(name)
                if info is not None:
                    model_server.stop_server(info)
                    self._server_file(name).unlink()
            if kind == "Experiment":
                # As garbage collection does for owned Workflows; Models outlive their Experiment.
                for workflow in self.store.list("Workflow"):
                    labels = workflow["metadata"].get("labels", {})
                    if labels.get(EXPERIMENT_LABEL) == name:
                        wf_name = workflow["metadata"]["name"]
                        self.store.delete("Workflow", wf_name)
                        shutil.rmtree(self.home / "runs" / wf_name, ignore_errors=True)
            gone = self.store.delete(kind, name)
            if kind == "Deployment" and not any(
                watch.needs_watching(Deployment.model_validate(d))
                for d in self.store.list("Deployment")
            ):
                controller.stop_controller(self.home)
            return gone

    def set_status(self, obj: Experiment | Model | Deployment, status: Any) -> None:
        """Record `status` (a status model or its wire dict) on the stored object."""
        wire = status.wire() if hasattr(status, "wire") else status
        self._set_status(obj, wire)

    def _set_status(self, obj: Experiment | Model | Deployment, status: dict[str, Any]) -> None:
        self.store.update_status(
            obj.kind, obj.metadata.name, status, obj.metadata.namespace or DEFAULT_NAMESPACE
        )
