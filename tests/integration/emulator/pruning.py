"""Pruning of unknown fields, as the API server does for structural CRD schemas.

A field that the schema does not declare is dropped, not refused, unless the node says
`x-kubernetes-preserve-unknown-fields: true`; the API server answers with one warning per
dropped field (`unknown field "spec.foo"`), or refuses the request with 400 under
`?fieldValidation=Strict`. At the root, `apiVersion`, `kind` and `metadata` are always kept, and
`metadata` is pruned to the fields of ObjectMeta; `x-kubernetes-embedded-resource` nodes keep
their own `apiVersion`, `kind` and `metadata` likewise. A null where the schema is not
`nullable` is dropped too, silently (the API server does that before defaulting).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

OBJECT_META = frozenset(
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    }
)  # fmt: skip
_ALWAYS = ("apiVersion", "kind", "metadata")


def prune(schema: Schema, obj: dict[str, Any]) -> list[str]:
    """Drop from `obj` (in place) what `schema` does not declare; the dropped paths."""
    dropped: list[str] = []
    _prune_object(schema, obj, "", dropped, embedded=True)
    return dropped


def _prune_meta(meta: Any, path: str, dropped: list[str]) -> None:
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in OBJECT_META]:
            del meta[key]
            dropped.append(f"{path}.{key}")


def _prune_object(
    schema: Schema, value: dict[str, Any], path: str, dropped: list[str], embedded: bool
) -> None:
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    keep = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    for key in list(value):
        where = f"{path}.{key}" if path else key
        if embedded and key in _ALWAYS:
            if key == "metadata":
                _prune_meta(value[key], where, dropped)
            continue
        if props is not None and key in props:
            if value[key] is None and not props[key].get("nullable"):
                del value[key]
                continue
            _prune(props[key], value[key], where, dropped)
        elif isinstance(extra, dict):
            if value[key] is None and not extra.get("nullable"):
                del value[key]
                continue
            _prune(extra, value[key], f"{path}[{key}]", dropped)
        elif not keep and extra is not True:
            del value[key]
            dropped.append(where)


def _prune(schema: Schema, value: Any, path: str, dropped: list[str]) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict) and (
        schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema
    ):
        if (
            schema.get("x-kubernetes-preserve-unknown-fields")
            and "properties" not in schema
            and (not isinstance(schema.get("additionalProperties"), dict))
        ):
            return
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        _prune_object(schema, value, path, dropped, embedded)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(schema["items"], item, f"{path}[{index}]", dropped)
