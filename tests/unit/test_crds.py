"""crds/ is generated from aiml024.api, structural, checked in, and accepts the examples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES, REPO
from tests.schema_validation import (
    cel_problems,
    cel_rules,
    crd_schema,
    load_crd,
    structural_problems,
    validate_against_crd,
)

from aiml024.api import KINDS, NAMES, Experiment, Model, SpecError, parse_object
from aiml024.compiler import crds

CRDS = REPO / "crds"
REGENERATE = "python -m aiml024.compiler.crds --out crds/"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def crd_path(kind: str) -> Path:
    return CRDS / f"{NAMES[kind][0]}.aiml024.io.yaml"


def schema(kind: str) -> dict[str, Any]:
    return crd_schema(load_crd(str(crd_path(kind))), "v1alpha1")


def walk(node: Any, where: str = "") -> Any:
    yield where, node
    if isinstance(node, dict):
        for key, sub in node.items():
            yield from walk(sub, f"{where}.{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from walk(sub, f"{where}[{index}]")


class TestCheckedIn:
    def test_crds_match_the_api(self) -> None:
        for name, text in crds.render_all().items():
            path = CRDS / name
            assert path.exists(), f"{path} is missing; run `{REGENERATE}`"
            assert path.read_text() == text, f"{path} is out of date; run `{REGENERATE}`"

    def test_no_stale_files(self) -> None:
        assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crds.render_all())

    def test_check_mode_reports_drift(self, tmp_path: Path) -> None:
        lines: list[str] = []
        assert crds.main(["--out", str(tmp_path), "--check"], out=lines.append) == 1
        assert len(lines) == len(KINDS) and not list(tmp_path.iterdir())
        assert crds.main(["--out", str(tmp_path)], out=lines.append) == 0
        assert crds.main(["--out", str(tmp_path), "--check"], out=lines.append) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crds.render_all())


@pytest.mark.parametrize("kind", list(KINDS))
class TestStructural:
    def test_structural(self, kind: str) -> None:
        assert structural_problems(schema(kind)) == []

    def test_cel_rules_are_plausible(self, kind: str) -> None:
        assert cel_problems(schema(kind)) == []

    def test_no_json_schema_leftovers(self, kind: str) -> None:
        for where, node in walk(schema(kind)):
            if not isinstance(node, dict) or where.endswith((".properties", ".enum")):
                continue
            leftovers = {"$ref", "$defs", "definitions", "title", "anyOf", "allOf", "const"}
            assert not leftovers & set(node), f"{where}: {leftovers & set(node)}"
            assert node.get("default", 0) is not None, f"{where}: default null"
            if "additionalProperties" in node:
                assert isinstance(node["additionalProperties"], dict), where

    def test_type_on_every_node(self, kind: str) -> None:
        for where, node in walk(schema(kind)):
            if where.endswith((".properties", ".enum", ".required", ".x-kubernetes-validations")):
                continue
            if isinstance(node, dict) and not where.endswith(".x-kubernetes-list-map-keys"):
                if where.split(".")[-1].startswith("x-kubernetes-validations"):
                    continue
                assert "type" in node, f"{where} has no type"

    def test_names_scope_and_version(self, kind: str) -> None:
        crd = load_crd(str(crd_path(kind)))
        plural, singular, short = NAMES[kind]
        assert crd["metadata"]["name"] == f"{plural}.aiml024.io"
        spec = crd["spec"]
        assert spec["group"] == "aiml024.io" and spec["scope"] == "Namespaced"
        assert spec["names"] | {} == {
            "kind": kind,
            "listKind": f"{kind}List",
            "plural": plural,
            "singular": singular,
            "shortNames": short,
            "categories": ["aiml024"],
        }
        [version] = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        assert schema(kind)["properties"]["metadata"] == {"type": "object"}

    def test_printer_columns_point_at_real_fields(self, kind: str) -> None:
        [version] = load_crd(str(crd_path(kind)))["spec"]["versions"]
        root = schema(kind)
        for column in version["additionalPrinterColumns"]:
            node = root
            *parents, leaf = column["jsonPath"].lstrip(".").split(".")
            for part in parents:
                node = node["properties"][part] if "properties" in node else {}
            if parents == ["metadata"] or parents[-1:] == ["metrics"]:
                continue  # apiserver-owned metadata, and a map keyed by metric name
            assert leaf in node.get("properties", {}), column


def test_printer_columns_per_kind() -> None:
    def columns(kind: str) -> list[str]:
        [version] = load_crd(str(crd_path(kind)))["spec"]["versions"]
        return [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]

    assert columns("Experiment") == ["Task", "Phase", "Trials", "Total", "Metric", "Best", "Age"]
    assert columns("Model") == ["Task", "Desired", "Stage", "Decision", "AUC", "Age"]
    assert columns("Deployment") == ["Model", "Phase", "Endpoint", "Age"]


def test_cross_field_rules_sit_where_pydantic_checks_them() -> None:
    def rules(kind: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for where, _, rule in cel_rules(schema(kind)):
            found.setdefault(where, []).append(rule["rule"])
        return found

    experiment, model, deployment = rules("Experiment"), rules("Model"), rules("Deployment")
    assert experiment["(root).spec.data"] == ["has(self.uri) != has(self.sql)"]
    assert len(experiment["(root).spec"]) == 2  # objective fits task, both tasks
    assert "(root).spec.strategy" in deployment and "(root).spec.autoscaling" in deployment
    assert "self.minReplicas" in deployment["(root).spec.autoscaling"][0]
    assert len(model["(root).spec.source"]) == 3  # origin, digest, immutable
    assert model["(root).spec.task"] == ["self == oldSelf"]


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*/*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("apiVersion") == "aiml024.io/v1alpha1":
                out.append((str(path.relative_to(EXAMPLES)), document))
    return out


EXAMPLE_DOCS = example_documents()


@pytest.mark.parametrize(("name", "document"), EXAMPLE_DOCS, ids=[n for n, _ in EXAMPLE_DOCS])
def test_example_validates_against_generated_crd(name: str, document: dict[str, Any]) -> None:
    assert validate_against_crd(document, crd_path(document["kind"])) == []


def test_objects_with_full_status_validate() -> None:
    """What the operator writes back (wire format of a filled-in status) is accepted too."""
    exp_doc = yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())
    exp = parse_object(exp_doc)
    assert isinstance(exp, Experiment)
    exp_wire = exp.wire() | {
        "status": {
            "observedGeneration": 1,
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Running",
                    "lastTransitionTime": NOW.isoformat(),
                }
            ],
            "workflowName": "churn-g1",
            "trialsTotal": 40,
            "trialsCompleted": 12,
            "metric": "auc",
            "bestValue": 0.91,
            "bestTrial": {
                "number": 7,
                "learner": "lightgbm",
                "value": 0.91,
                "params": {"num_leaves": 31, "lr": 0.05, "boosting": "gbdt", "x": True, "y": None},
            },
            "leaderboard": [{"rank": 1, "name": "ensemble", "value": 0.92, "members": ["a"]}],
        }
    }
    parse_object(exp_wire)  # the api accepts it ...
    assert validate_against_crd(exp_wire, crd_path("Experiment")) == []  # ... and so does the CRD
    model = parse_object(
        {
            "apiVersion": "aiml024.io/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "churn-model-1"},
            "spec": {"task": "classification", "source": {"experiment": "churn", "trial": 7}},
            "status": {
                "artifactUri": "s3://b/m",
                "sha256": "0" * 64,
                "metrics": {"auc": 0.9},
                "policy": {
                    "decision": "deny",
                    "violations": ["auc below 0.95"],
                    "bundleDigest": "sha256:1",
                    "stage": "production",
                    "evaluatedAt": NOW.isoformat(),
                },
                "approvals": [{"user": "risk", "stage": "production", "at": NOW.isoformat()}],
                "stage": "staging",
            },
        }
    )
    assert isinstance(model, Model)
    assert validate_against_crd(model.wire(), crd_path("Model")) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "serach"), {}, "'serach' was unexpected"),
        (("spec", "task"), "clustering", "'clustering' is not one of"),
        (("spec", "search", "trials"), 0, "less than the minimum"),
        (("spec", "split", "holdoutFraction"), 0.0, "less than or equal to the minimum"),
    ],
)
def test_generated_crd_refuses_bad_specs(path: tuple[str, ...], value: Any, expected: str) -> None:
    document = yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = validate_against_crd(document, crd_path("Experiment"))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"type": "ab"}, "strategy.ab is required for strategy.type ab"),
        ({"type": "bluegreen"}, "strategy.blueGreen is required for strategy.type bluegreen"),
        ({"type": "canary"}, "strategy.canary is required for strategy.type canary"),
        (
            {"type": "canary", "canary": {"model": "m", "steps": [{"weight": 50}, {"weight": 10}]}},
            "canary.steps weights must ascend",
        ),
        (
            {"type": "canary", "canary": {"model": "m", "steps": [{"weight": 10}, {"weight": 10}]}},
            "canary.steps weights must ascend",
        ),
        ({"type": "ab", "ab": {"model": "m", "minSamples": 500, "maxSamples": 100}}, "minSamples"),
        (
            {"type": "canary", "canary": {"model": "m", "steps": [{"weight": 10}, {"weight": 50}]}},
            None,
        ),
        ({"type": "bluegreen", "blueGreen": {"model": "m", "previewSeconds": 30}}, None),
        ({"type": "ab", "ab": {"model": "m", "weight": 20}}, None),
    ],
)
def test_strategy_rules_in_the_crd_say_what_the_api_says(
    strategy: dict[str, Any], expected: str | None
) -> None:
    """The CRD's CEL rules (evaluated as the API server does) and the api agree."""
    from tests.integration.emulator import cel

    document = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"model": "v1", "strategy": strategy},
    }
    found = [str(v) for v in cel.validate(schema("Deployment"), document)]
    if expected is None:
        assert found == []
        parse_object(document)
        return
    assert len(found) == 1 and expected in found[0], found
    with pytest.raises(SpecError, match=expected.split(" (")[0]):
        parse_object(document)


RETRAIN = {"experiment": "churn", "dataUri": "s3://d/new/"}


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        ({"action": "retrain"}, "monitor.retrain is required for action retrain"),
        (
            {"action": "retrain", "retrain": {**RETRAIN, "steps": [{"weight": 50}, {"weight": 20}]}},
            "retrain.steps weights must ascend",
        ),
        ({"action": "retrain", "retrain": RETRAIN}, None),
        ({"action": "retrain", "retrain": {**RETRAIN, "steps": [{"weight": 30}]}}, None),
    ],
)
def test_monitor_rules_in_the_crd_say_what_the_api_says(
    monitor: dict[str, Any], expected: str | None
) -> None:
    from tests.integration.emulator import cel

    document = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"model": "v1", "monitors": [monitor]},
    }
    found = [str(v) for v in cel.validate(schema("Deployment"), document)]
    if expected is None:
        assert found == []
        parse_object(document)
        return
    assert len(found) == 1 and expected in found[0], found
    with pytest.raises(SpecError, match=expected):
        parse_object(document)


@pytest.mark.parametrize(
    "steps",
    [[{"weight": 100}], []],
    ids=["a step of 100% (that is a promotion, which the policy must allow)", "no step"],
)
def test_retrain_steps_that_would_skip_the_gate_or_stall_are_refused(
    steps: list[dict[str, Any]],
) -> None:
    document = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"model": "v1", "monitors": [
            {"action": "retrain", "retrain": {**RETRAIN, "steps": steps}}
        ]},
    }  # fmt: skip
    assert validate_against_crd(document, crd_path("Deployment"))
    with pytest.raises(SpecError, match="retrain.steps"):
        parse_object(document)
