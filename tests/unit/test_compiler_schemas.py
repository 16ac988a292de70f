"""Every compiled manifest validates against the upstream CRDs its target installs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES
from tests.schema_validation import UPSTREAM_CRDS, validate_against_crd, validate_upstream

from aiml024.api import parse_object
from aiml024.compiler import CompileOptions, ServedModel, compile_objects

DIGEST = "0123456789abcdef" * 4


def _experiment(spec: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())
    document["metadata"] |= {"namespace": "ml", "generation": 4}
    document["spec"] |= spec
    return document


def _deployment(spec: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load((EXAMPLES / "churn" / "deployment.yaml").read_text())
    document["metadata"] |= {"namespace": "ml", "generation": 2}
    document["spec"] |= spec
    return document


# GPU nodes by selector and tolerations (spec.resources.gpu itself is refused until the
# runtime computes on a GPU).
GPU = {
    "resources": {
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "true", "tolerationSeconds": 30},
        ],
    }
}
VARIANTS = {
    "experiment": _experiment({}),
    "experiment-gpu": _experiment(GPU),
    "experiment-regression": _experiment(
        {"task": "regression", "objective": "minimize_rmse", "target": "spend"}
    ),
    "deployment": _deployment({}),
    "deployment-canary": _deployment(
        {"strategy": {"type": "canary", "canary": {"model": "churn-model-2", "weight": 20}}}
    ),
    "deployment-shadow": _deployment(
        {
            "strategy": {"type": "shadow", "shadow": {"model": "churn-model-2"}},
            "autoscaling": None,
            "replicas": 2,
        }
    ),
}
MODELS = {
    name: ServedModel(name, f"s3://b/models/{name}", DIGEST, "classification")
    for name in ("churn-model-v1", "churn-model-2")
}
OPTIONS = CompileOptions(image="registry.example/aiml024:1", image_pull_policy="Always")


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for variant, document in VARIANTS.items():
        for manifest in compile_objects([parse_object(document)], OPTIONS, MODELS):
            out.append((f"{variant}-{manifest['kind']}", manifest))
    return out


MANIFESTS = _manifests()


@pytest.mark.parametrize(("name", "manifest"), MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_compiled_manifest_validates_upstream(
    name: str, manifest: dict[str, Any], schemas_dir: Path
) -> None:
    assert validate_upstream(manifest, schemas_dir) == []


def test_every_compile_target_is_covered() -> None:
    kinds = {m["kind"] for _, m in MANIFESTS}
    assert kinds == {"Workflow", "SeldonDeployment", "ServiceMonitor", "PrometheusRule", "CronWorkflow"}
    assert kinds <= set(UPSTREAM_CRDS)


def _by_kind(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(m for _, m in MANIFESTS if m["kind"] == kind))


# A broken copy of each output, and what validation must say about it: proof that the tests
# above would fail if the compiler emitted an invalid field.
def _break_workflow(m: dict[str, Any]) -> None:
    m["spec"]["templates"][1]["container"]["commandd"] = ["typo"]


def _break_workflow_type(m: dict[str, Any]) -> None:
    m["spec"]["templates"][3]["activeDeadlineSeconds"] = 1.5


def _break_retry(m: dict[str, Any]) -> None:
    m["spec"]["templates"][1]["retryStrategy"]["retryPolicy"] = "Sometimes"


def _break_label(m: dict[str, Any]) -> None:
    m["metadata"]["labels"]["aiml024.io/generation"] = 4


def _break_seldon(m: dict[str, Any]) -> None:
    m["spec"]["predictors"][0]["traffic"] = "100"


def _break_seldon_label(m: dict[str, Any]) -> None:
    m["spec"]["predictors"][0]["labels"]["aiml024.io/sha256"] = DIGEST


def _break_hpa(m: dict[str, Any]) -> None:
    m["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]["metricsv2"][0]["resource"][
        "target"
    ] = {}


def _break_monitor(m: dict[str, Any]) -> None:
    del m["spec"]["endpoints"]


def _break_rule(m: dict[str, Any]) -> None:
    m["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"


BROKEN = [
    ("Workflow", _break_workflow, "'commandd' was unexpected"),
    ("Workflow", _break_workflow_type, "activeDeadlineSeconds"),
    ("Workflow", _break_retry, "'Sometimes' is not one of"),
    ("Workflow", _break_label, "metadata.labels.aiml024.io/generation: 4 is not of type"),
    ("SeldonDeployment", _break_seldon, "spec.predictors[0].traffic: '100' is not of type"),
    ("SeldonDeployment", _break_seldon_label, "is not a valid label value"),
    ("SeldonDeployment", _break_hpa, "metricsv2[0].resource.target: 'type' is a required property"),
    ("ServiceMonitor", _break_monitor, "'endpoints' is a required property"),
    ("PrometheusRule", _break_rule, "does not match"),
]


@pytest.mark.parametrize(
    ("kind", "breaker", "expected"), BROKEN, ids=[b.__name__ for _, b, _ in BROKEN]
)
def test_validation_catches_a_broken_copy(
    kind: str, breaker: Any, expected: str, schemas_dir: Path
) -> None:
    manifest = _by_kind(kind)
    assert validate_upstream(manifest, schemas_dir) == []
    breaker(manifest)
    problems = validate_upstream(manifest, schemas_dir)
    assert problems, f"validation missed {breaker.__name__}"
    assert any(expected in p for p in problems), problems


def test_wrong_kind_or_version_is_reported(schemas_dir: Path) -> None:
    crd = schemas_dir / UPSTREAM_CRDS["Workflow"][0]
    manifest = _by_kind("Workflow")
    assert (
        "is not argoproj.io/Workflow"
        in validate_against_crd(manifest | {"kind": "CronWorkflow"}, crd)[0]
    )
    assert (
        "does not serve version 'v2'"
        in validate_against_crd(manifest | {"apiVersion": "argoproj.io/v2"}, crd)[0]
    )
