"""CustomResourceDefinitions for Experiment, Model and Deployment, generated from aiml024.api.

    python -m aiml024.compiler.crds --out crds/          # write crds/<plural>.aiml024.io.yaml
    python -m aiml024.compiler.crds --out crds/ --check  # exit 1 when crds/ is out of date

The pydantic JSON Schema becomes a Kubernetes structural schema: every `$ref` inlined,
`X | None` as `nullable: true`, no `default: null`, no titles, `additionalProperties` only for
maps, `x-kubernetes-preserve-unknown-fields` only where values are free-form, a `type` on every
node, and CEL `x-kubernetes-validations` for the cross-field rules the pydantic validators check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aiml024.api import GROUP, KINDS, NAMES, VERSION
from aiml024.api.deployment import AbTest, Autoscaling
from aiml024.api.experiment import CLASSIFICATION_OBJECTIVES, REGRESSION_OBJECTIVES

Schema = dict[str, Any]

HEADER = (
    "# Generated from aiml024.api by `python -m aiml024.compiler.crds --out crds/`; do not edit.\n"
)
CATEGORY = "aiml024"

# Keywords copied as they are; anything else pydantic emits is an error, so a new pydantic
# feature cannot slip a non-structural keyword into the CRDs unnoticed.
_KEPT = {
    "type", "format", "description", "enum", "default", "required", "pattern",
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
}  # fmt: skip
_DROPPED = {"title", "additionalProperties", "$ref", "$defs", "anyOf", "allOf", "const"}


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _quoted(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _default_or(model: type[BaseModel], field: str, wire: str) -> str:
    """`self.<wire>` with the pydantic default filled in, for rules on defaulted fields."""
    return f"(has(self.{wire}) ? self.{wire} : {model.model_fields[field].default})"


# Cross-field rules, keyed by the pydantic model (its $defs name) whose validator they mirror.
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "DataSource": [
        _rule("has(self.uri) != has(self.sql)", "set exactly one of data.uri and data.sql"),
    ],
    "ExperimentSpec": [
        _rule(
            f"!has(self.objective) || self.task != 'classification' || "
            f"self.objective in {_quoted(CLASSIFICATION_OBJECTIVES)}",
            "objective does not apply to classification; "
            f"use one of {', '.join(CLASSIFICATION_OBJECTIVES)}",
        ),
        _rule(
            f"!has(self.objective) || self.task != 'regression' || "
            f"self.objective in {_quoted(REGRESSION_OBJECTIVES)}",
            "objective does not apply to regression; "
            f"use one of {', '.join(REGRESSION_OBJECTIVES)}",
        ),
    ],
    "ModelSource": [
        _rule(
            "has(self.experiment) || has(self.artifactUri)",
            "set source.experiment or source.artifactUri",
        ),
        _rule(
            "!has(self.artifactUri) || has(self.sha256)",
            "source.sha256 is required with source.artifactUri",
        ),
    ],
    "Strategy": [
        _rule(
            f"!has(self.type) || self.type != '{kind}' || has(self.{field})",
            f"strategy.{field} is required for strategy.type {kind}",
        )
        for kind, field in (
            ("canary", "canary"),
            ("shadow", "shadow"),
            ("ab", "ab"),
            ("bluegreen", "blueGreen"),
        )
    ],
    **{
        kind: [
            _rule(
                "!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && "
                "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)))",
                f"{where}.steps weights must ascend (each above the one before)",
            ),
        ]
        for kind, where in (("Canary", "canary"), ("Retrain", "retrain"))
    },
    "Monitor": [
        _rule(
            "!has(self.action) || self.action != 'retrain' || has(self.retrain)",
            "monitor.retrain is required for action retrain",
        ),
    ],
    "AbTest": [
        _rule(
            f"{_default_or(AbTest, 'min_samples', 'minSamples')} <= "
            f"{_default_or(AbTest, 'max_samples', 'maxSamples')}",
            "ab.minSamples must not exceed ab.maxSamples",
        ),
    ],
    "Autoscaling": [
        _rule(
            f"{_default_or(Autoscaling, 'min_replicas', 'minReplicas')} <= "
            f"{_default_or(Autoscaling, 'max_replicas', 'maxReplicas')}",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
    ],
}
# Rules on one property: a Model is one immutable version, only its desired stage moves.
PROPERTY_RULES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("ModelSpec", "source"): [
        _rule("self == oldSelf", "spec.source is immutable; register a new Model instead"),
    ],
    ("ModelSpec", "task"): [
        _rule("self == oldSelf", "spec.task is immutable; register a new Model instead"),
    ],
}
PRINTER_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Experiment": [
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Trials", "type": "integer", "jsonPath": ".status.trialsCompleted"},
        {"name": "Total", "type": "integer", "jsonPath": ".status.trialsTotal"},
        {"name": "Metric", "type": "string", "jsonPath": ".status.metric"},
        {"name": "Best", "type": "number", "jsonPath": ".status.bestValue"},
        {"name": "Model", "type": "string", "jsonPath": ".status.modelName", "priority": 1},
        {"name": "Workflow", "type": "string", "jsonPath": ".status.workflowName", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Model": [
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Desired", "type": "string", "jsonPath": ".spec.stage"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
        {"name": "Decision", "type": "string", "jsonPath": ".status.policy.decision"},
        {"name": "AUC", "type": "number", "jsonPath": ".status.metrics.auc"},
        {"name": "Metric", "type": "string", "jsonPath": ".status.primaryMetric", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Deployment": [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
        {"name": "SLO", "type": "string", "jsonPath": ".status.sloState", "priority": 1},
        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.rollout.weight", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
_ROOT_STRINGS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object.",
    "kind": "Kind is a string value representing the REST resource this object represents.",
}


class _Converter:
    """One pydantic JSON Schema -> structural schema, resolving `$defs` as it goes."""

    def __init__(self, defs: dict[str, Schema]):
        self.defs = defs

    def node(self, schema: Schema, def_name: str | None = None) -> Schema:
        siblings = {k: v for k, v in schema.items() if k in ("description", "default")}
        if "$ref" in schema or "allOf" in schema:
            ref = schema["$ref"] if "$ref" in schema else _single(schema["allOf"])["$ref"]
            name = ref.removeprefix("#/$defs/")
            return _overlay(self.node(self.defs[name], def_name=name), siblings)
        if "anyOf" in schema:
            members = [m for m in schema["anyOf"] if m.get("type") != "null"]
            if len(members) == 1:
                inner = self.node(members[0])
                nullable = len(members) < len(schema["anyOf"])
                return _overlay(inner | ({"nullable": True} if nullable else {}), siblings)
            # A union of several types is free-form data as far as the apiserver is concerned.
            return _overlay({"x-kubernetes-preserve-unknown-fields": True}, siblings)
        unknown = set(schema) - _KEPT - _DROPPED - {"properties", "items", "exclusiveMinimum",
                                                    "exclusiveMaximum"}  # fmt: skip
        if unknown or "type" not in schema and "const" not in schema:
            raise ValueError(f"cannot express {sorted(unknown) or schema} in a structural schema")
        out: Schema = {k: v for k, v in schema.items() if k in _KEPT and k != "required"}
        if "const" in schema:
            out["enum"] = [schema["const"]]
            out.setdefault("type", "string")
        if out.get("default", 0) is None:
            del out["default"]
        # JSON Schema 2020-12 bounds are numbers; OpenAPI v3.0 (Kubernetes) uses booleans.
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in schema:
                out[plain] = schema[bound]
                out[bound] = True
        if "items" in schema:
            out["items"] = self.node(schema["items"])
        if "properties" in schema:
            out["properties"] = {
                prop: self._property(def_name, prop, sub)
                for prop, sub in schema["properties"].items()
            }
            if schema.get("required"):
                out["required"] = list(schema["required"])
        elif isinstance(schema.get("additionalProperties"), dict):
            values = self.node(schema["additionalProperties"])
            if "type" in values:
                out["additionalProperties"] = values
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        if def_name in CEL_RULES:
            out["x-kubernetes-validations"] = CEL_RULES[def_name]
        return _ordered(out)

    def _property(self, owner: str | None, prop: str, schema: Schema) -> Schema:
        out = self.node(schema)
        if prop == "conditions" and out.get("type") == "array":
            # metav1.Condition lists are maps keyed by type, as in every Kubernetes API.
            out |= {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
        rules = PROPERTY_RULES.get((owner or "", prop))
        if rules:
            out["x-kubernetes-validations"] = [*out.get("x-kubernetes-validations", []), *rules]
        return out


def _single(items: list[Schema]) -> Schema:
    if len(items) != 1:
        raise ValueError(f"allOf with {len(items)} members is not structural")
    return items[0]


def _overlay(schema: Schema, siblings: Schema) -> Schema:
    out = dict(schema)
    if "description" in siblings:
        out["description"] = siblings["description"]
    if siblings.get("default") is not None:
        out["default"] = siblings["default"]
    return _ordered(out)


def _ordered(schema: Schema) -> Schema:
    # description, type and nullable first, so the YAML reads like kubectl explain.
    head = [k for k in ("description", "type", "nullable") if k in schema]
    return {k: schema[k] for k in head} | {k: v for k, v in schema.items() if k not in head}


def _description(model: type[BaseModel]) -> str:
    doc = model.__doc__ or sys.modules[model.__module__].__doc__ or model.__name__
    return doc.strip().splitlines()[0]


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural `openAPIV3Schema` of one top-level api model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw.get("$defs", {}))
    props = raw["properties"]
    return {
        "description": _description(model),
        "type": "object",
        "properties": {
            **{key: {"description": text, "type": "string"} for key, text in _ROOT_STRINGS.items()},
            # The apiserver validates metadata itself; a CRD may only narrow name.
            "metadata": {"type": "object"},
            "spec": converter.node(props["spec"]),
            # Status is written through its subresource and never null.
            "status": {k: v for k, v in converter.node(props["status"]).items() if k != "nullable"},
        },
        "required": ["spec"],
    }


def crd(kind: str) -> Schema:
    plural, singular, short_names = NAMES[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "aiml024"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS[kind],
                    "schema": {"openAPIV3Schema": openapi_schema(KINDS[kind])},
                }
            ],
        },
    }


def render(document: Schema) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD, exactly as checked in under crds/."""
    return {f"{NAMES[kind][0]}.{GROUP}.yaml": render(crd(kind)) for kind in KINDS}


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiml024.compiler.crds", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("crds"), help="directory to write")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "out of date" if args.check else "wrote"
    for path in stale:
        out(f"{verb}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
