"""Experiment -> Argo Workflow (`argoproj.io/v1alpha1`), as docs/CONTRACTS.md specifies.

The local executor runs this document as is, so the compiler emits only this Argo subset:

- Workflow: `apiVersion`, `kind`, `metadata.{name, namespace, labels}`, and
  `spec.{entrypoint, serviceAccountName, arguments.parameters[].{name, value}, podMetadata.labels,
  podGC.strategy, ttlStrategy.{secondsAfterSuccess, secondsAfterFailure}, templates}`.
- DAG template: `name`, `dag.tasks[].{name, template, dependencies, withSequence.count,
  arguments.parameters[].{name, value}, arguments.artifacts[].{name, from}}`.
- Container templates: `name`, `inputs.parameters[].name`, `inputs.artifacts[].{name, path}`,
  `outputs.parameters[].{name, valueFrom.path}`, `outputs.artifacts[].{name, path}`,
  `container.{image, imagePullPolicy, command, args, resources.{requests, limits}}`,
  `activeDeadlineSeconds` (search), `retryStrategy.{limit, retryPolicy}` (ingest),
  `nodeSelector` and `tolerations` (search, only when the spec asks).
- Expressions: `{{workflow.name}}`, `{{workflow.parameters.<name>}}`,
  `{{inputs.parameters.<name>}}`, `{{tasks.<task>.outputs.parameters.result}}`,
  `{{tasks.<task>.outputs.artifacts.<name>}}` and `{{item}}` (in a withSequence task's
  arguments).

Distributed search (spec.search.parallelism = N > 1): the DAG runs
`validate -> search-workers -> search -> evaluate`. `search-workers` fans out N pods of the
`search-worker` template (`withSequence: {count: N}`, the worker index as the input parameter
`worker`); they share one Optuna study (the `study-storage` parameter, PostgreSQL in a cluster)
and put each trial's out-of-fold predictions under the artifact store. The `search` task then
merges every worker's trials into the leaderboard and ensemble (`"merge": true` in its params)
and produces the same `search` artifact and result as the single search step, so evaluate and
everything that reads the `search` node are unchanged. With N = 1 the DAG is the plain one.

Each step's `--params` is its model in aiml024.api.step_params (PARAMS[step]), written as a
JSON template (`_params_json`): every field of the model becomes the Argo expression that
supplies it, so the document the step parses is exactly the one the model describes, and a
field added to a model without a source here fails the compile. Earlier steps' results reach a
container as input parameters named after the step, because Argo resolves `{{tasks.*}}` only
in a DAG task's arguments, never inside a template.
"""

from __future__ import annotations

from typing import Any

from aiml024.api import Experiment
from aiml024.api.common import DEFAULT_NAMESPACE, EXPERIMENT_LABEL, GENERATION_LABEL
from aiml024.api.experiment import SUPPORTED_TASKS, Resources
from aiml024.api.step_params import (
    ARTIFACTS,
    PARAMS,
    STEPS,
    StepName,
    earlier_steps,
    producer,
)

from .options import MANAGED_BY, CompileError, CompileOptions, canonical_json, child_name

INPUTS_DIR = "/aiml024/inputs"
OUTPUTS_DIR = "/aiml024/outputs"
CARD_KEY_DIR = "/var/run/aiml024/card-key"  # the register step's signing key (Secret mount)
RESULT = "result"
WORKERS_TASK = "search-workers"
WORKER_TEMPLATE = "search-worker"

# step -> (input artifacts, output artifacts); each input is the output of the same name.
# Workflow parameter -> key in the step's --params JSON (all strings except `spec`).
GLOBAL_PARAMS = {
    "experiment": "experiment",
    "namespace": "namespace",
    "experiment-uid": "experimentUid",
    "artifact-store": "artifactStore",
    "study-storage": "studyStorage",
    "code-version": "codeVersion",
}
_FROM_WORKFLOW = {key: param for param, key in GLOBAL_PARAMS.items()}

# The search step stops itself at its time budget; the deadline is only a backstop for a hung
# pod, so it allows for data loading, ensembling and the final refit on top of the budget.
DEADLINE_FACTOR = 2
DEADLINE_MARGIN_SECONDS = 600
# Keep finished workflows long enough for the operator to read them and for people to debug.
TTL_AFTER_SUCCESS_SECONDS = 24 * 3600
TTL_AFTER_FAILURE_SECONDS = 7 * 24 * 3600


def workflow_name(exp: Experiment) -> str:
    """`<experiment>-g<generation>`: a new spec generation gets a new workflow."""
    return child_name(exp.metadata.name, f"-g{exp.metadata.generation or 1}")


def _param_expression(step: StepName, key: str, role: str) -> str | None:
    """The JSON text that supplies `key` of the step's params once Argo substitutes it; None
    for a key this template leaves out (an optional field of the model).

    String parameters sit inside quotes; `spec` and the earlier results are JSON objects, so
    they go in unquoted. The options' strings are checked for quotes and backslashes up front.
    """
    if key in _FROM_WORKFLOW:
        return f'"{{{{workflow.parameters.{_FROM_WORKFLOW[key]}}}}}"'
    if key == "spec":
        return "{{workflow.parameters.spec}}"
    if key == "workflow":
        return '"{{workflow.name}}"'
    if key in earlier_steps(step):
        return f"{{{{inputs.parameters.{key}}}}}"
    if key == "worker":
        return "{{inputs.parameters.worker}}" if role == "worker" else None
    if key == "merge":
        return "true" if role == "merge" else None
    return None


def _params_json(step: StepName, role: str = "") -> str:
    """The --params argument: the step's params model (api.step_params.PARAMS) as JSON once
    Argo has substituted every expression in it; keys sorted, camelCase."""
    fields: dict[str, str] = {}
    for name, field in PARAMS[step].model_fields.items():
        key = field.alias or name
        expression = _param_expression(step, key, role)
        if expression is not None:
            fields[key] = expression
        elif field.is_required():
            raise CompileError(f"{step} params: no Argo expression supplies {key!r}")
    return "{" + ",".join(f'"{key}":{fields[key]}' for key in sorted(fields)) + "}"


def _resources(resources: Resources, gpu: bool) -> dict[str, Any]:
    # Memory limit = request (OOM is predictable); no CPU limit, so steps are not throttled.
    limits: dict[str, Any] = {"memory": resources.memory}
    if gpu and resources.gpu:
        limits["nvidia.com/gpu"] = resources.gpu
    return {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits}


def _step_template(
    step: StepName, exp: Experiment, options: CompileOptions, role: str = ""
) -> dict[str, Any]:
    """A step's container template; `role` is "worker" or "merge" for distributed search."""
    inputs, outputs = ARTIFACTS[step]
    if role == "worker":
        outputs = ()  # out-of-fold predictions go to the shared search directory instead
    resources = exp.spec.resources
    container: dict[str, Any] = {"image": options.image}
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    container |= {
        "command": ["python", "-m", "aiml024.runtime", step],
        "args": [
            "--params",
            _params_json(step, role),
            "--inputs",
            INPUTS_DIR,
            "--outputs",
            OUTPUTS_DIR,
        ],
        "resources": _resources(resources, gpu=step == "search" and role != "merge"),
    }
    template: dict[str, Any] = {"name": WORKER_TEMPLATE if role == "worker" else step}
    earlier = [*earlier_steps(step), *(["worker"] if role == "worker" else [])]
    if earlier or inputs:
        template["inputs"] = {}
        if earlier:
            template["inputs"]["parameters"] = [{"name": name} for name in earlier]
        if inputs:
            template["inputs"]["artifacts"] = [
                {"name": name, "path": f"{INPUTS_DIR}/{name}"} for name in inputs
            ]
    template["outputs"] = {
        "parameters": [{"name": RESULT, "valueFrom": {"path": f"{OUTPUTS_DIR}/result.json"}}]
    }
    if outputs:
        template["outputs"]["artifacts"] = [
            {"name": name, "path": f"{OUTPUTS_DIR}/{name}"} for name in outputs
        ]
    template["container"] = container
    if step == "register" and options.card_key_secret:
        container["env"] = [{"name": "AIML024_CARD_KEY_FILE", "value": f"{CARD_KEY_DIR}/key.pem"}]
        container["volumeMounts"] = [{"name": "card-key", "mountPath": CARD_KEY_DIR,
                                      "readOnly": True}]  # fmt: skip
        template["volumes"] = [
            {"name": "card-key", "secret": {"secretName": options.card_key_secret,
                                            "defaultMode": 0o400}}
        ]  # fmt: skip
    if step == "ingest":
        # Data sources fail transiently (network, throttling); one retry, never more.
        template["retryStrategy"] = {"limit": 1, "retryPolicy": "OnFailure"}
    if step == "search":
        budget = exp.spec.search.time_budget_seconds
        template["activeDeadlineSeconds"] = DEADLINE_FACTOR * budget + DEADLINE_MARGIN_SECONDS
        if role == "merge":
            return template
        if resources.node_selector:
            template["nodeSelector"] = dict(sorted(resources.node_selector.items()))
        if resources.tolerations:
            template["tolerations"] = [t.wire() for t in resources.tolerations]
    return template


def _dag_task(step: StepName, workers: int = 1, role: str = "") -> dict[str, Any]:
    """The DAG task of a step; for distributed search (`workers` > 1) `role` "worker" is the
    fanned-out task and the `search` task (the merge) waits for it."""
    name = WORKERS_TASK if role == "worker" else step
    task: dict[str, Any] = {"name": name, "template": WORKER_TEMPLATE if role == "worker" else step}
    index = STEPS.index(step)
    if index:
        before = STEPS[index - 1]
        task["dependencies"] = [WORKERS_TASK if role == "merge" else before]
    if role == "worker":
        task["withSequence"] = {"count": str(workers)}
    arguments: dict[str, Any] = {}
    if index:
        arguments["parameters"] = [
            {"name": earlier, "value": f"{{{{tasks.{earlier}.outputs.parameters.{RESULT}}}}}"}
            for earlier in earlier_steps(step)
        ]
        if role == "worker":
            arguments["parameters"].append({"name": "worker", "value": "{{item}}"})
    if ARTIFACTS[step][0]:
        arguments["artifacts"] = [
            {"name": name, "from": f"{{{{tasks.{producer(name)}.outputs.artifacts.{name}}}}}"}
            for name in ARTIFACTS[step][0]
        ]
    if arguments:
        task["arguments"] = arguments
    return task


def _templates(exp: Experiment, options: CompileOptions) -> list[dict[str, Any]]:
    workers = exp.spec.search.parallelism
    if workers <= 1:
        tasks = [_dag_task(step) for step in STEPS]
        steps = [_step_template(step, exp, options) for step in STEPS]
    else:
        tasks, steps = [], []
        for step in STEPS:
            if step == "search":
                tasks += [_dag_task(step, workers, "worker"), _dag_task(step, workers, "merge")]
                steps += [
                    _step_template(step, exp, options, "worker"),
                    _step_template(step, exp, options, "merge"),
                ]
            else:
                tasks.append(_dag_task(step))
                steps.append(_step_template(step, exp, options))
    return [{"name": "automl", "dag": {"tasks": tasks}}, *steps]


# Where a step in a cluster may read data from: object stores and HTTPS (not plain HTTP: the
# cloud metadata endpoints answer there with credentials). A pod-local path
# would read the pod's own files (its service-account token) with the runtime's identity.
REMOTE_DATA_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "https")


def cluster_data_problem(exp: Experiment, options: CompileOptions) -> str | None:
    """Why the steps may not read `spec.data.uri` where the artifact store is remote (a
    cluster), or None (the rule: `storage_problem`)."""
    uri = exp.spec.data.uri
    if uri is None:
        return None
    namespace = exp.metadata.namespace or DEFAULT_NAMESPACE
    return storage_problem("spec.data.uri", uri, REMOTE_DATA_SCHEMES, options, namespace)


def storage_problem(
    what: str, uri: str, schemes: tuple[str, ...], options: CompileOptions, namespace: str
) -> str | None:
    """Why a step in a cluster may not read or write `uri`, or None. Steps use the runtime's
    credentials, so `uri` must name one of `schemes` (object storage, maybe HTTPS), and never
    another namespace's part of the artifact store. With a local store (one machine, the
    emulator's tests) local files are the user's own."""
    store = options.artifact_store
    if "://" not in store or store.startswith("file://"):
        return None
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if "::" in uri or scheme not in schemes:
        return (
            f"{what}: {uri!r} is not object storage"
            + (" or HTTPS" if "https" in schemes else "")
            + f"; in a cluster the steps use {', '.join(s + '://' for s in schemes)}"
        )
    root = store.rstrip("/") + "/"
    if uri.startswith(root) and not uri.startswith(f"{root}{namespace}/"):
        return (
            f"{what}: {uri!r} lies in another namespace's part of the artifact store; "
            f"namespace {namespace} may use only {root}{namespace}/"
        )
    return None


def compile_experiment(exp: Experiment, options: CompileOptions | None = None) -> dict[str, Any]:
    """The Argo Workflow that trains `exp`; the same input always gives the same document."""
    options = options or CompileOptions()
    if exp.spec.task not in SUPPORTED_TASKS:
        raise CompileError(
            f"spec.task: {exp.spec.task} is not supported yet; "
            f"use one of {', '.join(SUPPORTED_TASKS)}"
        )
    generation = exp.metadata.generation or 1
    labels = {
        EXPERIMENT_LABEL: exp.metadata.name,
        GENERATION_LABEL: str(generation),
        **MANAGED_BY,
    }
    metadata: dict[str, Any] = {"name": workflow_name(exp)}
    if exp.metadata.namespace:
        metadata["namespace"] = exp.metadata.namespace
    metadata["labels"] = labels
    parameters = {
        "experiment": exp.metadata.name,
        # With the uid, the run's artifact paths and study name are its own (api.steps.run_root).
        "namespace": exp.metadata.namespace or DEFAULT_NAMESPACE,
        "experiment-uid": exp.metadata.uid or "",
        "spec": canonical_json(exp.spec.wire()),
        "artifact-store": options.artifact_store,
        "study-storage": options.study_storage,
        "code-version": options.code_version,
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": {
            "entrypoint": "automl",
            "serviceAccountName": options.service_account,
            "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]},
            "podMetadata": {"labels": dict(labels)},
            # Failed pods stay for `kubectl logs`; successful ones go at once.
            "podGC": {"strategy": "OnPodSuccess"},
            "ttlStrategy": {
                "secondsAfterSuccess": TTL_AFTER_SUCCESS_SECONDS,
                "secondsAfterFailure": TTL_AFTER_FAILURE_SECONDS,
            },
            "templates": _templates(exp, options),
        },
    }
