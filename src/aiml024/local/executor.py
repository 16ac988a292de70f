"""Run a compiled Argo Workflow document on this machine, step by step, as local processes.

The executor implements the subset of Argo that the compiler emits and refuses anything else,
so a workflow that runs here runs the same way under the Argo controller:

- `spec.entrypoint`, `spec.arguments.parameters`, DAG templates (`dag.tasks` with `template`,
  `dependencies` or a `depends` made of `&&`-joined task names, `arguments.parameters`,
  `arguments.artifacts` with `from`, `withSequence` with `count` or `start`/`end`), container
  templates (`command`, `args`, `env`, `inputs.parameters`, `inputs.artifacts[].path`,
  `outputs.parameters[].valueFrom.path`, `outputs.artifacts[].path`), `retryStrategy.limit`
  and `activeDeadlineSeconds`;
- expressions `{{workflow.name}}`, `{{workflow.parameters.X}}`, `{{inputs.parameters.X}}`,
  `{{inputs.artifacts.X.path}}`, `{{tasks.T.outputs.parameters.P}}` and `{{item}}` (in a
  withSequence task's arguments).

A `withSequence` task runs all its items at once, as parallel processes (as Argo runs them as
parallel pods), each in its own directory `<task>/<index>/`, and succeeds when every item
does; nodes are named like Argo's, `<task>(<index>:<item>)`, under a TaskGroup node `<task>`.
The items share nothing but what they share in a cluster (the distributed search's study
storage and the artifact store). Like Argo, their outputs are not aggregated into artifacts;
referring to a looped task's outputs (or using withItems, withParam, when, ...) is refused.

Scheduling fields (resources, nodeSelector, tolerations, images, service accounts, pod GC) are
accepted and have no local meaning. Containers see their filesystem under `/aiml024/`; here that
prefix maps to the step's own directory, the one difference from a pod.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reconcile.clock import now

CONTAINER_ROOT = "/aiml024/"
_EXPRESSION = re.compile(r"{{\s*([^{}]+?)\s*}}")

# Fields with no effect on a single machine; anything not listed here or handled is refused.
_IGNORED_SPEC = {
    "serviceAccountName", "podGC", "ttlStrategy", "podMetadata", "securityContext",
    "nodeSelector", "tolerations", "affinity", "activeDeadlineSeconds", "workflowMetadata",
    "priorityClassName", "parallelism", "imagePullSecrets", "archiveLogs",
}  # fmt: skip
_HANDLED_SPEC = {"entrypoint", "arguments", "templates"}
_IGNORED_TEMPLATE = {
    "metadata", "nodeSelector", "tolerations", "affinity", "podSpecPatch", "serviceAccountName",
    "securityContext", "priorityClassName", "timeout", "archiveLocation", "parallelism",
}  # fmt: skip
_HANDLED_TEMPLATE = {"name", "dag", "container", "inputs", "outputs", "retryStrategy",
                     "activeDeadlineSeconds"}  # fmt: skip
_IGNORED_CONTAINER = {
    "image", "imagePullPolicy", "resources", "securityContext", "volumeMounts", "workingDir",
    "name", "ports", "livenessProbe", "readinessProbe",
}  # fmt: skip
_HANDLED_CONTAINER = {"command", "args", "env"}
_HANDLED_TASK = {"name", "template", "dependencies", "depends", "arguments", "withSequence"}
_HANDLED_SEQUENCE = {"count", "start", "end"}


class ExecutorError(RuntimeError):
    """The workflow uses something this executor cannot run, or is malformed."""


class StepFailed(RuntimeError):
    """A step exited non-zero; `message` is what it said was wrong."""

    def __init__(self, task: str, exit_code: int, message: str):
        self.task = task
        self.exit_code = exit_code
        self.message = message
        super().__init__(f"step {task} failed (exit {exit_code}): {message}")


@dataclass
class NodeStatus:
    name: str
    phase: str = "Pending"
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    type: str = "Pod"


@dataclass
class WorkflowRun:
    """What the executor reports, shaped like Argo's Workflow status."""

    name: str
    phase: str = "Pending"
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None
    nodes: dict[str, NodeStatus] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "message": self.message,
            "nodes": {
                name: {
                    "displayName": name,
                    "type": node.type,
                    "phase": node.phase,
                    "startedAt": node.started_at,
                    "finishedAt": node.finished_at,
                    "message": node.message,
                    "outputs": {
                        "parameters": [{"name": k, "value": v} for k, v in node.outputs.items()]
                    },
                }
                for name, node in self.nodes.items()
            },
        }


Listener = Callable[[str, dict[str, Any]], None]
"""Called with (task name, event) for each JSON event line a step prints, and for step phases."""


def _now() -> str:
    return now().strftime("%Y-%m-%dT%H:%M:%SZ")


def check_supported(workflow: dict[str, Any]) -> None:
    """Refuse, before anything runs, every Argo feature this executor does not implement."""
    if workflow.get("apiVersion") != "argoproj.io/v1alpha1" or workflow.get("kind") != "Workflow":
        raise ExecutorError("not an Argo Workflow (argoproj.io/v1alpha1, kind Workflow)")
    spec = workflow.get("spec", {})
    _refuse_unknown("spec", spec, _HANDLED_SPEC | _IGNORED_SPEC)
    for i, template in enumerate(spec.get("templates", [])):
        where = f"spec.templates[{i}] ({template.get('name')})"
        _refuse_unknown(where, template, _HANDLED_TEMPLATE | _IGNORED_TEMPLATE)
        if ("dag" in template) == ("container" in template):
            raise ExecutorError(f"{where}: only dag and container templates are supported")
        if "dag" in template:
            _refuse_unknown(f"{where}.dag", template["dag"], {"tasks"})
            for task in template["dag"]["tasks"]:
                _refuse_unknown(f"{where}.dag.tasks[{task.get('name')}]", task, _HANDLED_TASK)
                if "withSequence" in task:
                    sequence(task)  # refuses what it cannot expand
                depends = task.get("depends", "")
                if depends and not re.fullmatch(r"[\w-]+(\s*&&\s*[\w-]+)*", depends.strip()):
                    raise ExecutorError(
                        f"{where}.dag.tasks[{task['name']}].depends: only 'a && b' is supported"
                    )
        else:
            _refuse_unknown(
                f"{where}.container", template["container"], _HANDLED_CONTAINER | _IGNORED_CONTAINER
            )


def sequence(task: dict[str, Any]) -> list[str]:
    """The items of a task's `withSequence`: `count` (from 0, or from `start`) or
    `start`..`end` inclusive, as Argo expands them."""
    spec = task["withSequence"]
    where = f"dag.tasks[{task.get('name')}].withSequence"
    if not isinstance(spec, dict):
        raise ExecutorError(f"{where}: must be an object")
    _refuse_unknown(where, spec, _HANDLED_SEQUENCE)
    try:
        start = int(spec.get("start", 0))
        if "count" in spec:
            if "end" in spec:
                raise ExecutorError(f"{where}: count and end are exclusive")
            end = start + int(spec["count"]) - 1
        else:
            end = int(spec.get("end", 0))
    except ValueError:
        raise ExecutorError(f"{where}: count, start and end must be integers") from None
    if end < start:
        return []
    return [str(i) for i in range(start, end + 1)]


def _refuse_unknown(where: str, obj: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ExecutorError(
            f"{where}: unsupported Argo feature(s) {', '.join(unknown)} in the local executor"
        )


def _task_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {t["name"]: t for t in tasks}
    ordered: list[dict[str, Any]] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if any(t["name"] == name for t in ordered):
            return
        if name in visiting:
            raise ExecutorError(f"dependency cycle through task {name}")
        if name not in by_name:
            raise ExecutorError(f"unknown dependency {name}")
        visiting.add(name)
        for dep in task_dependencies(by_name[name]):
            visit(dep)
        visiting.discard(name)
        ordered.append(by_name[name])

    for task in tasks:
        visit(task["name"])
    return ordered


def task_dependencies(task: dict[str, Any]) -> list[str]:
    if "depends" in task:
        return [p.strip() for p in task["depends"].split("&&") if p.strip()]
    return list(task.get("dependencies", []))


def substitute(text: str, scope: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in scope:
            raise ExecutorError(f"unresolved expression {{{{{key}}}}}")
        return scope[key]

    return _EXPRESSION.sub(replace, text)


class LocalExecutor:
    """Runs one Workflow document; each container step is `python -m ...` in its own directory."""

    def __init__(self, workdir: Path, python: str = sys.executable):
        self.workdir = workdir
        self.python = python

    def run(
        self,
        workflow: dict[str, Any],
        parameters: dict[str, str] | None = None,
        listener: Listener | None = None,
        on_change: Callable[[WorkflowRun], None] | None = None,
    ) -> WorkflowRun:
        """Run to completion; `parameters` override arguments as `argo submit -p` would."""
        check_supported(workflow)
        spec = workflow["spec"]
        name = workflow["metadata"]["name"]
        templates = {t["name"]: t for t in spec["templates"]}
        entry = templates.get(spec["entrypoint"])
        if entry is None or "dag" not in entry:
            raise ExecutorError(f"entrypoint {spec['entrypoint']!r} must name a dag template")
        arguments = {p["name"]: str(p.get("value", "")) for p in spec["arguments"]["parameters"]}
        unknown = sorted(set(parameters or {}) - set(arguments))
        if unknown:
            raise ExecutorError(f"unknown workflow parameter(s): {', '.join(unknown)}")
        arguments.update(parameters or {})
        scope = {"workflow.name": name} | {
            f"workflow.parameters.{k}": v for k, v in arguments.items()
        }

        run = WorkflowRun(name=name, phase="Running", started_at=_now())
        tasks = _task_order(entry["dag"]["tasks"])
        run.nodes = {t["name"]: NodeStatus(name=t["name"]) for t in tasks}
        notify = on_change or (lambda _run: None)
        notify(run)
        artifacts: dict[tuple[str, str], Path] = {}
        for task in tasks:
            node = run.nodes[task["name"]]
            node.phase, node.started_at = "Running", _now()
            notify(run)
            try:
                if "withSequence" in task:
                    node.type = "TaskGroup"
                    self._run_items(task, templates, scope, artifacts, run, listener, notify)
                else:
                    self._run_task(task, templates, scope, artifacts, node, listener)
            except StepFailed as failure:
                node.phase, node.finished_at, node.message = "Failed", _now(), failure.message
                run.phase, run.finished_at = "Failed", _now()
                run.message = f"step {task['name']} failed: {failure.message}"
                for later in run.nodes.values():
                    if later.phase == "Pending":
                        later.phase = "Omitted"
                notify(run)
                return run
            node.phase, node.finished_at = "Succeeded", _now()
            for key, value in node.outputs.items():
                scope[f"tasks.{task['name']}.outputs.parameters.{key}"] = value
            notify(run)
        run.phase, run.finished_at = "Succeeded", _now()
        notify(run)
        return run

    def _run_items(
        self,
        task: dict[str, Any],
        templates: dict[str, dict[str, Any]],
        scope: dict[str, str],
        artifacts: dict[tuple[str, str], Path],
        run: WorkflowRun,
        listener: Listener | None,
        notify: Callable[[WorkflowRun], None],
    ) -> None:
        """Every item of a withSequence task at once, one thread watching each process."""
        lock = threading.Lock()

        def locked_listener(name: str, event: dict[str, Any]) -> None:
            if listener is not None:
                with lock:
                    listener(name, event)

        items = sequence(task)
        nodes = []
        for index, item in enumerate(items):
            node = NodeStatus(name=f"{task['name']}({index}:{item})", phase="Running")
            node.started_at = _now()
            run.nodes[node.name] = node
            nodes.append(node)
        notify(run)
        failures: list[StepFailed] = []
        errors: list[BaseException] = []

        def one(index: int, item: str, node: NodeStatus) -> None:
            try:
                self._run_task(
                    task, templates, scope | {"item": item}, artifacts, node, locked_listener,
                    stepdir=self.workdir / task["name"] / str(index),
                )  # fmt: skip
                node.phase = "Succeeded"
            except StepFailed as failure:
                node.phase, node.message = "Failed", failure.message
                failures.append(failure)
            except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
                node.phase, node.message = "Error", str(error)
                errors.append(error)
            node.finished_at = _now()
            with lock:
                notify(run)

        threads = [
            threading.Thread(target=one, args=(i, item, node), daemon=True)
            for i, (item, node) in enumerate(zip(items, nodes, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        if failures:
            first = failures[0]
            raise StepFailed(task["name"], first.exit_code, first.message)

    def _run_task(
        self,
        task: dict[str, Any],
        templates: dict[str, dict[str, Any]],
        scope: dict[str, str],
        artifacts: dict[tuple[str, str], Path],
        node: NodeStatus,
        listener: Listener | None,
        stepdir: Path | None = None,
    ) -> None:
        template = templates.get(task["template"])
        if template is None or "container" not in template:
            raise ExecutorError(f"task {task['name']}: template {task['template']!r} not found")
        looped = stepdir is not None
        stepdir = stepdir or self.workdir / task["name"]
        if stepdir.exists():
            shutil.rmtree(stepdir)
        stepdir.mkdir(parents=True)

        local_scope = dict(scope)
        task_args = task.get("arguments", {})
        passed = {
            p["name"]: substitute(str(p["value"]), scope) for p in task_args.get("parameters", [])
        }
        for p in template.get("inputs", {}).get("parameters", []):
            if p["name"] in passed:
                value = passed[p["name"]]
            elif "value" in p:
                value = substitute(str(p["value"]), scope)
            else:
                raise ExecutorError(f"task {task['name']}: input parameter {p['name']} not given")
            local_scope[f"inputs.parameters.{p['name']}"] = value
        sources = {a["name"]: a for a in task_args.get("artifacts", [])}
        for art in template.get("inputs", {}).get("artifacts", []):
            source = sources.get(art["name"], {}).get("from")
            if source is None:
                raise ExecutorError(
                    f"task {task['name']}: input artifact {art['name']} has no from"
                )
            ref = re.fullmatch(r"{{\s*tasks\.([\w-]+)\.outputs\.artifacts\.([\w-]+)\s*}}", source)
            if ref is None or (ref.group(1), ref.group(2)) not in artifacts:
                raise ExecutorError(f"task {task['name']}: cannot resolve artifact {source}")
            target = self._local(art["path"], stepdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            produced = artifacts[(ref.group(1), ref.group(2))]
            if produced.is_dir():
                shutil.copytree(produced, target)
            else:
                shutil.copy2(produced, target)
            local_scope[f"inputs.artifacts.{art['name']}.path"] = art["path"]
        for out in template.get("outputs", {}).get("artifacts", []):
            self._local(out["path"], stepdir).parent.mkdir(parents=True, exist_ok=True)

        container = template["container"]
        argv = [self._map(substitute(str(a), local_scope), stepdir)
                for a in [*container.get("command", []), *container.get("args", [])]]  # fmt: skip
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.python
        env = dict(os.environ)
        for item in container.get("env", []):
            env[item["name"]] = substitute(str(item.get("value", "")), local_scope)
        retries = int(template.get("retryStrategy", {}).get("limit", 0))
        deadline = template.get("activeDeadlineSeconds")
        for attempt in range(retries + 1):
            code, message = self._spawn(argv, env, stepdir, task["name"], listener, deadline)
            if code == 0:
                break
            if attempt == retries:
                raise StepFailed(task["name"], code, message)

        for out in template.get("outputs", {}).get("parameters", []):
            path = self._local(out["valueFrom"]["path"], stepdir)
            if not path.exists():
                raise StepFailed(task["name"], 0, f"output parameter {out['name']} not written")
            node.outputs[out["name"]] = path.read_text()
        for out in template.get("outputs", {}).get("artifacts", []):
            path = self._local(out["path"], stepdir)
            if not path.exists():
                raise StepFailed(task["name"], 0, f"output artifact {out['name']} not written")
            if not looped:  # Argo does not aggregate a loop's artifacts either
                artifacts[(task["name"], out["name"])] = path

    def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        stepdir: Path,
        task: str,
        listener: Listener | None,
        deadline: int | None,
    ) -> tuple[int, str]:
        stderr_path = stepdir / "stderr.log"
        started = time.monotonic()
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                argv, cwd=stepdir, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
            assert process.stdout is not None
            # The deadline holds even for a step that prints nothing.
            watchdog = threading.Timer(deadline, process.kill) if deadline else None
            if watchdog:
                watchdog.start()
            try:
                with (stepdir / "stdout.log").open("w") as stdout_log:
                    for line in process.stdout:
                        stdout_log.write(line)
                        if listener and line.startswith("{"):
                            try:
                                listener(task, json.loads(line))
                            except json.JSONDecodeError:
                                pass
                code = process.wait()
            finally:
                if watchdog:
                    watchdog.cancel()
        if deadline and code != 0 and time.monotonic() - started >= deadline:
            return code, f"exceeded activeDeadlineSeconds ({deadline} s)"
        if code == 0:
            return 0, ""
        lines = [ln for ln in stderr_path.read_text().splitlines() if ln.strip()]
        errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
        message = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
        return code, message

    def _local(self, container_path: str, stepdir: Path) -> Path:
        if not container_path.startswith(CONTAINER_ROOT):
            raise ExecutorError(f"path {container_path} is outside {CONTAINER_ROOT}")
        return stepdir / container_path.removeprefix(CONTAINER_ROOT)

    def _map(self, text: str, stepdir: Path) -> str:
        # Only whole path arguments are mapped; JSON parameters pass through untouched.
        if text.startswith(CONTAINER_ROOT):
            return str(self._local(text, stepdir))
        return text
