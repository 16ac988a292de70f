"""Validate manifests against upstream CRDs, and check CRD schemas for structural problems.

`validate_against_crd(manifest, crd_path)` turns a CRD version's `openAPIV3Schema` (OpenAPI v3.0
with Kubernetes extensions) into JSON Schema draft 4 and returns readable errors, `[]` when
valid. It is stricter than the apiserver in one way, on purpose: a field the schema does not
declare is an error (the apiserver would silently prune it; `kubectl --validate=strict` refuses
it). CEL `x-kubernetes-validations` are not evaluated.

`structural_problems(schema)` applies the Kubernetes structural-schema rules (and the
apiextensions v1 keyword restrictions) to one `openAPIV3Schema` and names every violation.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema  # type: ignore[import-untyped]
import yaml

# The upstream CRDs, vendored in tests/upstream (its README lists them); AIML024_SCHEMAS points
# at another copy with the same layout instead.
SCHEMAS = Path(os.environ.get("AIML024_SCHEMAS") or Path(__file__).resolve().parent / "upstream")

Schema = dict[str, Any]

try:  # libyaml is ~10x faster on the 2-3 MB upstream files
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

# The ObjectMeta fields a manifest may set; the apiserver owns the rest.
_OBJECT_META: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN.pattern},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

# Everything apiextensions.k8s.io/v1 JSONSchemaProps accepts; anything else is refused.
_K8S_KEYWORDS = {
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
    "maxItems", "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties",
    "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not", "properties",
    "additionalProperties", "patternProperties", "dependencies", "additionalItems",
    "definitions", "externalDocs", "example", "nullable",
}  # fmt: skip
_X_KEYWORDS = {
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type", "x-kubernetes-validations",
}  # fmt: skip
_FORBIDDEN_IN_V1 = {"$ref", "definitions", "dependencies", "additionalItems", "patternProperties"}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


# --- loading ---------------------------------------------------------------------------------


def load_crd(crd_path: str | Path) -> Schema:
    """One CustomResourceDefinition document, parsed once per session (shared: do not mutate)."""
    return _load_crd(str(Path(crd_path).resolve()))


@functools.cache
def _load_crd(crd_path: str) -> Schema:
    with open(crd_path, "rb") as handle:
        documents = [d for d in yaml.load_all(handle, Loader=_Loader) if d]
    crds = [d for d in documents if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"{crd_path}: expected one CustomResourceDefinition, found {len(crds)}")
    return cast(Schema, crds[0])


def crd_schema(crd: Schema, version: str) -> Schema:
    for item in crd["spec"]["versions"]:
        if item["name"] == version:
            return cast(Schema, item["schema"]["openAPIV3Schema"])
    served = ", ".join(v["name"] for v in crd["spec"]["versions"])
    raise KeyError(f"{crd['metadata']['name']} has no version {version} (has {served})")


# --- OpenAPI v3.0 + Kubernetes extensions -> JSON Schema draft 4 -----------------------------


def _python_pattern(pattern: str) -> str:
    # Go and ECMA accept a global flag group after `^` (`^(?i)...`); Python needs it first.
    match = re.match(r"^\^(\(\?[a-zA-Z]+\))", pattern)
    return match.group(1) + "^" + pattern[len(match.group(0)) :] if match else pattern


def to_json_schema(node: Schema, strict: bool = True) -> Schema:
    """JSON Schema draft 4 for one OpenAPI v3.0 node with Kubernetes extensions."""
    out: Schema = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_json_schema(v, strict) for k, v in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value, strict)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v, strict) for v in value]
        elif key == "pattern":
            out[key] = _python_pattern(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "example", "externalDocs"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    free_form = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-embedded-resource"
    )
    if strict and node.get("type") == "object" and "additionalProperties" not in node:
        if not free_form:
            # Undeclared fields are pruned by the apiserver: for a generator, that is a bug.
            out["additionalProperties"] = False
    return out


def _check_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def _check_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _check_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


_FORMATS = jsonschema.FormatChecker(formats=())
# Only formats Kubernetes enforces and that a manifest can get wrong; `quantity`, `byte`,
# `int-or-string` and friends are left to the apiserver.
_FORMATS.checks("int32")(_check_int32)
_FORMATS.checks("int64")(_check_int64)
_FORMATS.checks("date-time")(_check_date_time)


@functools.cache
def _validator(crd_path: str, version: str) -> jsonschema.Draft4Validator:
    schema = copy.deepcopy(crd_schema(load_crd(crd_path), version))
    # A root `metadata: {type: object}` means "the apiserver's ObjectMeta".
    if set(schema.get("properties", {}).get("metadata", {})) <= {"type", "description"}:
        schema.setdefault("properties", {})["metadata"] = _OBJECT_META
    return jsonschema.Draft4Validator(to_json_schema(schema), format_checker=_FORMATS)


def _where(path: Iterator[Any] | Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _label_problems(value: Any, path: tuple[Any, ...] = ()) -> list[str]:
    """Kubernetes label syntax for every `labels`/`matchLabels` map (a schema only says string).

    PrometheusRule `spec.groups` is skipped: its labels are Prometheus labels, not Kubernetes'.
    """
    if path[:2] == ("spec", "groups"):
        return []
    problems = []
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in ("labels", "matchLabels") and isinstance(sub, dict):
                problems += _label_map_problems(sub, _where((*path, key)))
            problems += _label_problems(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            problems += _label_problems(sub, (*path, index))
    return problems


def _label_map_problems(labels: dict[Any, Any], where: str) -> list[str]:
    problems = []
    for key, value in labels.items():
        name = str(key).rsplit("/", 1)[-1]
        if len(name) > 63 or not _LABEL_NAME.match(name):
            problems.append(f"{where}: {key!r} is not a valid label name")
        if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.match(value)):
            problems.append(f"{where}.{key}: {value!r} is not a valid label value")
    return problems


def validate_against_crd(manifest: Schema, crd_path: str | Path) -> list[str]:
    """Every problem with `manifest` under the CRD at `crd_path`, as `path: message` lines."""
    crd = load_crd(str(crd_path))
    group, _, version = str(manifest.get("apiVersion", "")).rpartition("/")
    spec = crd["spec"]
    if group != spec["group"] or manifest.get("kind") != spec["names"]["kind"]:
        return [
            f"apiVersion/kind: {manifest.get('apiVersion')}/{manifest.get('kind')} is not "
            f"{spec['group']}/{spec['names']['kind']}"
        ]
    if version not in {v["name"] for v in spec["versions"] if v.get("served")}:
        return [f"apiVersion: {spec['group']} does not serve version {version!r}"]
    validator = _validator(str(Path(crd_path).resolve()), version)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    problems = [f"{_where(e.absolute_path)}: {_short(e.message)}" for e in errors]
    return problems + _label_problems(manifest)


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


# Where each compile target's upstream CRDs live under SCHEMAS. Seldon Core v1: the last
# Apache-2.0 release only (tests/upstream/README.md says why not the newer, BSL-licensed CRD).
UPSTREAM_CRDS: dict[str, tuple[str, ...]] = {
    "Workflow": ("argo-workflows/argoproj.io_workflows.yaml",),
    "CronWorkflow": ("argo-workflows/argoproj.io_cronworkflows.yaml",),
    "SeldonDeployment": (
        "seldon-core-v1/apache-2.0_v1.17.1/machinelearning.seldon.io_seldondeployments.yaml",
    ),
    "ServiceMonitor": ("prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",),
    "PrometheusRule": ("prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",),
}


def validate_upstream(manifest: Schema, schemas_dir: Path) -> list[str]:
    """Problems with `manifest` under every upstream CRD its kind has (prefixed by file)."""
    kind = manifest.get("kind")
    if kind not in UPSTREAM_CRDS:
        return [f"kind: no upstream CRD known for {kind!r}"]
    return [
        f"{relative}: {problem}"
        for relative in UPSTREAM_CRDS[str(kind)]
        for problem in validate_against_crd(manifest, schemas_dir / relative)
    ]


# --- structural schema rules ------------------------------------------------------------------


def structural_problems(schema: Schema) -> list[str]:
    """Violations of the Kubernetes structural-schema rules in one `openAPIV3Schema`.

    Rules (apiextensions.k8s.io/v1): a non-empty `type` on the root, every property, every
    additionalProperties and every items node (except int-or-string and preserve-unknown-fields
    nodes); no description/type/default/additionalProperties/nullable inside allOf/anyOf/oneOf/not
    (bar the int-or-string pattern) and every field a junctor names also declared outside it;
    `properties` and `additionalProperties` exclusive; no `additionalProperties: false`, `$ref`,
    `definitions`, `dependencies`, `additionalItems`, `patternProperties`, `uniqueItems: true`;
    `x-kubernetes-preserve-unknown-fields` only `true`; `default: null` only when nullable;
    list-type map lists have keys that their items declare; at the root, metadata restricts only
    name and generateName, and apiVersion/kind are strings.
    """
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("(root): type must be object")
    _check_node(schema, "(root)", problems, in_junctor=False)
    props = schema.get("properties", {})
    metadata = props.get("metadata")
    if metadata is not None:
        if metadata.get("type") != "object":
            problems.append("(root).metadata: type must be object")
        extra = set(metadata.get("properties", {})) - {"name", "generateName"}
        allowed = {"type", "properties", "description"}
        if extra or set(metadata) - allowed:
            problems.append("(root).metadata: only name and generateName may be restricted")
    for key in ("apiVersion", "kind"):
        if key in props and props[key].get("type") != "string":
            problems.append(f"(root).{key}: type must be string")
    return problems


def _int_or_string_junctor(node: Schema) -> bool:
    branches = node.get("anyOf") or []
    return node.get("x-kubernetes-int-or-string") is True and branches in (
        [{"type": "integer"}, {"type": "string"}],
        [],
    )


def _check_node(node: Schema, where: str, problems: list[str], in_junctor: bool) -> None:
    if not isinstance(node, dict):
        problems.append(f"{where}: a schema must be a mapping")
        return
    for key in node:
        if key not in _K8S_KEYWORDS and key not in _X_KEYWORDS:
            problems.append(f"{where}: unknown keyword {key!r}")
        elif key in _FORBIDDEN_IN_V1:
            problems.append(f"{where}: {key} is not allowed in apiextensions.k8s.io/v1")
    typed = node.get("type")
    if typed is not None and typed not in _TYPES:
        problems.append(f"{where}: type {typed!r} is not one of {sorted(_TYPES)}")
    if node.get("uniqueItems") is True:
        problems.append(f"{where}: uniqueItems cannot be true")
    if node.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties cannot be false")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or unset")
    if "default" in node and node["default"] is None and not node.get("nullable"):
        problems.append(f"{where}: default null requires nullable: true")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            problems.append(f"{where}: {bound} must be a boolean in OpenAPI v3.0")
    if node.get("x-kubernetes-int-or-string"):
        if typed is not None:
            problems.append(f"{where}: x-kubernetes-int-or-string nodes must not set type")
        if (
            not _int_or_string_junctor(node)
            or "allOf" in node
            and node["allOf"] not in ([{"anyOf": [{"type": "integer"}, {"type": "string"}]}],)
        ):
            if node.get("anyOf") or node.get("allOf"):
                problems.append(f"{where}: int-or-string allows only anyOf [integer, string]")
    if in_junctor:
        for key in _NOT_IN_JUNCTORS:
            if key in node:
                problems.append(f"{where}: {key} is not allowed inside allOf/anyOf/oneOf/not")
    _check_list_map(node, where, problems)
    _check_children(node, where, problems, in_junctor)


def _needs_type(node: Schema) -> bool:
    return not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    )


def _check_children(node: Schema, where: str, problems: list[str], in_junctor: bool) -> None:
    for prop, sub in (node.get("properties") or {}).items():
        path = f"{where}.{prop}"
        if not in_junctor and isinstance(sub, dict) and _needs_type(sub) and not sub.get("type"):
            problems.append(f"{path}: type is required")
        _check_node(sub, path, problems, in_junctor)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        sub = node.get(key)
        if isinstance(sub, dict):
            if not in_junctor and _needs_type(sub) and not sub.get("type"):
                problems.append(f"{where}{suffix}: type is required")
            _check_node(sub, f"{where}{suffix}", problems, in_junctor)
    declared = set(node.get("properties") or {})
    for junctor in _JUNCTORS:
        branches = node.get(junctor)
        if branches is None:
            continue
        for index, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            path = f"{where}.{junctor}[{index}]"
            if _int_or_string_junctor(node) and branch in ({"type": "integer"}, {"type": "string"}):
                continue
            _check_node(branch, path, problems, in_junctor=True)
            for prop in set(branch.get("properties") or {}) - declared:
                problems.append(f"{path}.{prop}: must also be declared outside {junctor}")
            if "items" in branch and "items" not in node:
                problems.append(f"{path}: items must also be declared outside {junctor}")


def _check_list_map(node: Schema, where: str, problems: list[str]) -> None:
    if node.get("x-kubernetes-list-type") != "map":
        return
    keys = node.get("x-kubernetes-list-map-keys") or []
    items = node.get("items") or {}
    if not keys:
        problems.append(f"{where}: x-kubernetes-list-type map needs x-kubernetes-list-map-keys")
    for key in keys:
        item_prop = (items.get("properties") or {}).get(key)
        if item_prop is None:
            problems.append(f"{where}: list map key {key!r} is not a property of its items")
        elif key not in (items.get("required") or []) and "default" not in item_prop:
            problems.append(f"{where}: list map key {key!r} must be required or defaulted")


# --- CEL rules --------------------------------------------------------------------------------


def cel_rules(schema: Schema, where: str = "(root)") -> Iterator[tuple[str, Schema, Schema]]:
    """(path, node, rule) for every `x-kubernetes-validations` entry under `schema`."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield where, schema, rule
    for prop, sub in (schema.get("properties") or {}).items():
        yield from cel_rules(sub, f"{where}.{prop}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            yield from cel_rules(schema[key], f"{where}{suffix}")


def cel_problems(schema: Schema) -> list[str]:
    """Plausibility of every CEL rule: it parses as far as brackets and quotes go, it reads
    `self`, and every `self.<field>` it names is a property of the node it sits on."""
    problems = []
    for where, node, rule in cel_rules(schema):
        text = rule.get("rule")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: x-kubernetes-validations entry without a rule")
            continue
        if not re.search(r"\bself\b", text):
            problems.append(f"{where}: rule {text!r} does not read self")
        if not _balanced(text):
            problems.append(f"{where}: rule {text!r} has unbalanced brackets or quotes")
        declared = set(node.get("properties") or {})
        for field in re.findall(r"\bself\.([A-Za-z_][A-Za-z0-9_]*)", _strip_strings(text)):
            if field not in declared:
                problems.append(f"{where}: rule {text!r} reads self.{field}, not a property")
        if "oldSelf" in text and "message" not in rule:
            problems.append(f"{where}: transition rule {text!r} needs a message")
    return problems


def _strip_strings(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def _balanced(text: str) -> bool:
    if text.count("'") % 2 or text.count('"') % 2:
        return False
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in _strip_strings(text):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack
