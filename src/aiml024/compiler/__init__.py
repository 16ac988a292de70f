"""Pure functions from aiml024.api objects to the manifests that run them.

Experiment -> Argo Workflow; Deployment -> SeldonDeployment, ServiceMonitor, PrometheusRule;
Model -> nothing (the operator gates and records it). No environment reads, clock or
randomness: the same objects and options always give byte-identical output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from aiml024.api import AnyObject, Deployment, Experiment, Model, unsupported

from . import batch, seldon, workflow
from .options import VERSION, CompileError, CompileOptions
from .seldon import ServedModel

P = ParamSpec("P")
R = TypeVar("R")


def _refusing_unsupported(compile_fn: Callable[P, R]) -> Callable[P, R]:
    """`compile_fn`, which first refuses a field the platform does not implement yet
    (api.support), with the same `not supported yet: <path> (<why>)` as apply and the webhook."""

    @functools.wraps(compile_fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        for obj in (*args, *kwargs.values()):
            if isinstance(obj, Experiment | Model | Deployment):
                problems = unsupported(obj)
                if problems:
                    raise CompileError("; ".join(problems))
        return compile_fn(*args, **kwargs)

    return checked


# The entry points: a hollow field never compiles, whoever builds the object.
compile_experiment = _refusing_unsupported(workflow.compile_experiment)
cluster_data_problem = workflow.cluster_data_problem
compile_deployment = _refusing_unsupported(seldon.compile_deployment)
compile_batch_scoring = _refusing_unsupported(batch.compile_batch_scoring)


def served_model(model: Model) -> ServedModel | None:
    """What a Model serves once registered: its status, or an artifact named in its source."""
    status = model.status
    if status is not None and status.artifact_uri:
        return ServedModel(model.metadata.name, status.artifact_uri, status.sha256, model.spec.task)
    source = model.spec.source
    if source.artifact_uri:
        return ServedModel(model.metadata.name, source.artifact_uri, source.sha256, model.spec.task)
    return None


def placeholder_model(name: str, options: CompileOptions, task: str | None = None) -> ServedModel:
    """Stands in for a Model not registered yet: `{artifact_store}/models/<name>`, no digest.

    `aiml024 compile` uses it so a Deployment can be rendered before its Model exists; the
    operator never does (it waits for the Model's status instead).
    """
    return ServedModel(name, f"{options.artifact_store}/models/{name}", None, task)


def compile_objects(
    objects: Iterable[AnyObject],
    options: CompileOptions | None = None,
    models: Mapping[str, ServedModel] | None = None,
) -> list[dict[str, Any]]:
    """Compile every object in order, as `aiml024 compile -f` prints them.

    A Deployment serves, for each Model it names: `models[name]` when given, else a Model among
    `objects` that has an artifact, else a placeholder (see `placeholder_model`).
    """
    options = options or CompileOptions()
    objects = list(objects)
    known = {o.metadata.name: o for o in objects if isinstance(o, Model)}
    served = {name: s for name, m in known.items() if (s := served_model(m)) is not None}
    served |= dict(models or {})
    out: list[dict[str, Any]] = []
    for obj in objects:
        if isinstance(obj, Experiment):
            out.append(compile_experiment(obj, options))
        elif isinstance(obj, Deployment):
            names = [route.model for route in obj.spec.routes()]
            resolved = {
                name: served.get(name) or placeholder_model(name, options, _task(known.get(name)))
                for name in names
            }
            out.extend(compile_deployment(obj, resolved, options))
    return out


def _task(model: Model | None) -> str | None:
    return model.spec.task if model is not None else None


__all__ = [
    "VERSION",
    "CompileError",
    "CompileOptions",
    "ServedModel",
    "cluster_data_problem",
    "compile_batch_scoring",
    "compile_deployment",
    "compile_experiment",
    "compile_objects",
    "placeholder_model",
    "served_model",
]
