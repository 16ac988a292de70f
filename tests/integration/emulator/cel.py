"""CRD `x-kubernetes-validations` evaluated as the API server does, on cel-python (`celpy`).

What the API server does, and this module with it:
- every rule on every schema node that has a value (null values are skipped), `self` bound to
  the node's value, typed by the schema: `number` is a double even when the JSON says `1`,
  `integer` an int, strings with `format: date-time`/`duration`/`byte` a timestamp, duration or
  bytes, objects with `properties` a message-like map whose field names are escaped
  (`x-y` -> `x__dash__y`, a keyword `in` -> `__in__`), and at the root `self.metadata` holds
  only `name` and `generateName`;
- transition rules (those that read `oldSelf`) only on UPDATE and only where the old object has
  a value that correlates: object properties and map keys by name, `x-kubernetes-list-type: map`
  items by their keys, `set` items by value; items of atomic lists never correlate;
- validation ratcheting (on by default since Kubernetes 1.30): a correlated value equal to the
  old one is not validated again, nor is anything under it;
- `message`, `messageExpression` (falling back to `message` when it fails or is blank), the
  default `failed rule: <rule>`, `reason` (FieldValueInvalid, Forbidden, Required, Duplicate)
  and `fieldPath`, formatted as `spec.source: Invalid value: "object": <message>` (the root is
  `<nil>`, as the API server prints an empty path);
- cel-go behaviour that celpy lacks, added here: comparisons across int/uint/double (the API
  server enables CrossTypeNumericComparisons), heterogeneous equality (`1 == 1.0`, `1 == 'a'` is
  false rather than an error), and the Kubernetes string, list and regex libraries (`lowerAscii`,
  `split`, `join`, `isSorted`, `sum`, `find`, ...).

Not done: compile-time type checking and cost budgets (a CRD the API server would refuse for
them is evaluated anyway), `optionalOldSelf` (treated like an ordinary transition rule),
`url()`, `quantity()`, `ip()`, `cidr()`, `format()`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError, base_functions

Obj = dict[str, Any]
Schema = dict[str, Any]

_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var", "void",
    "while",
}  # fmt: skip
_IDENT = re.compile(r"^[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*$")
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_OLD_SELF = re.compile(r"\boldSelf\b")
_NUMBERS = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def escape(name: str) -> str | None:
    """A property name as a CEL field name (None: not accessible from CEL)."""
    if name in _RESERVED:
        return f"__{name}__"
    if not _IDENT.match(name):
        return None
    return (
        name.replace("__", "__underscores__")
        .replace(".", "__dot__")
        .replace("-", "__dash__")
        .replace("/", "__slash__")
    )


# --- cel-go behaviour celpy lacks -----------------------------------------------------------


def _numeric(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, celtypes.BoolType)


def _compare(name: str, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    original = base_functions[name]

    def compare(left: Any, right: Any) -> Any:
        if _numeric(left) and _numeric(right) and type(left) is not type(right):
            return celtypes.BoolType(op(_plain(left), _plain(right)))
        return original(left, right)

    return compare


def _plain(value: Any) -> int | float:
    return float(value) if isinstance(value, celtypes.DoubleType) else int(value)


def _equal(left: Any, right: Any) -> bool:
    """CEL heterogeneous equality: numbers by value, other mismatched types are unequal."""
    if _numeric(left) and _numeric(right):
        return _plain(left) == _plain(right)
    if isinstance(left, celtypes.MapType) and isinstance(right, celtypes.MapType):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if isinstance(left, celtypes.ListType) and isinstance(right, celtypes.ListType):
        return len(left) == len(right) and all(
            _equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if left is None or right is None:
        return left is None and right is None
    if type(left) is not type(right) and not (
        isinstance(left, type(right)) or isinstance(right, type(left))
    ):
        return False
    return bool(left == right)


def _eq(left: Any, right: Any) -> Any:
    if isinstance(left, CELEvalError):
        return left
    if isinstance(right, CELEvalError):
        return right
    return celtypes.BoolType(_equal(left, right))


def _ne(left: Any, right: Any) -> Any:
    result = _eq(left, right)
    return result if isinstance(result, CELEvalError) else celtypes.BoolType(not result)


def _index_of(target: Any, item: Any, start: Any = 0) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(target.find(item, int(start)))
    for index, value in enumerate(target):
        if _equal(value, item):
            return celtypes.IntType(index)
    return celtypes.IntType(-1)


def _last_index_of(target: Any, item: Any, *start: Any) -> Any:
    if isinstance(target, str):
        end = int(start[0]) + len(item) if start else len(target)
        return celtypes.IntType(target.rfind(item, 0, end))
    for index in range(len(target) - 1, -1, -1):
        if _equal(target[index], item):
            return celtypes.IntType(index)
    return celtypes.IntType(-1)


def _split(text: Any, sep: Any, limit: Any = -1) -> Any:
    limit = int(limit)
    if limit == 0:
        return celtypes.ListType()
    parts = list(text) if sep == "" else text.split(sep, limit - 1 if limit > 0 else -1)
    if sep == "" and limit > 0:
        parts = parts[: limit - 1] + ["".join(parts[limit - 1 :])] if len(parts) > limit else parts
    return celtypes.ListType(celtypes.StringType(p) for p in parts)


def _replace(text: Any, old: Any, new: Any, limit: Any = -1) -> Any:
    return celtypes.StringType(text.replace(old, new, int(limit)))


def _substring(text: Any, start: Any, end: Any = None) -> Any:
    stop = len(text) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(text):
        raise ValueError(f"substring out of range: {start}, {end}")
    return celtypes.StringType(text[int(start) : stop])


def _char_at(text: Any, index: Any) -> Any:
    if not 0 <= int(index) <= len(text):
        raise ValueError(f"index out of range: {index}")
    return celtypes.StringType(text[int(index) : int(index) + 1])


def _join(items: Any, sep: Any = "") -> Any:
    return celtypes.StringType(str(sep).join(str(i) for i in items))


def _sum(items: Any) -> Any:
    total: Any = celtypes.IntType(0)
    for item in items:
        total = item if total == 0 and not isinstance(total, type(item)) else total + item
    return total


def _extreme(pick: Callable[..., Any]) -> Callable[[Any], Any]:
    def choose(items: Any) -> Any:
        if not items:
            raise ValueError("min/max of an empty list")
        return pick(items, key=_plain if all(_numeric(i) for i in items) else None)

    return choose


def _is_sorted(items: Any) -> Any:
    key = _plain if all(_numeric(i) for i in items) else None
    values = [key(i) for i in items] if key else list(items)
    return celtypes.BoolType(all(a <= b for a, b in zip(values, values[1:], strict=False)))


def _find(text: Any, pattern: Any) -> Any:
    found = re.search(pattern, text)
    return celtypes.StringType(found.group(0) if found else "")


def _find_all(text: Any, pattern: Any, limit: Any = -1) -> Any:
    found = [m.group(0) for m in re.finditer(pattern, text)]
    if int(limit) >= 0:
        found = found[: int(limit)]
    return celtypes.ListType(celtypes.StringType(f) for f in found)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_<_": _compare("_<_", lambda a, b: a < b),
    "_<=_": _compare("_<=_", lambda a, b: a <= b),
    "_>_": _compare("_>_", lambda a, b: a > b),
    "_>=_": _compare("_>=_", lambda a, b: a >= b),
    "_==_": _eq,
    "_!=_": _ne,
    # Kubernetes' CEL libraries (strings, lists, regex)
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: celtypes.StringType(
        "".join(c.lower() if c.isascii() else c for c in s)
    ),
    "upperAscii": lambda s: celtypes.StringType(
        "".join(c.upper() if c.isascii() else c for c in s)
    ),
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "trim": lambda s: celtypes.StringType(s.strip()),
    "join": _join,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _extreme(min),
    "max": _extreme(max),
    "find": _find,
    "findAll": _find_all,
}

_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def program(text: str) -> Any:
    """The compiled program for one expression (compiled once per process)."""
    runner = _PROGRAMS.get(text)
    if runner is None:
        runner = _PROGRAMS[text] = _ENV.program(_ENV.compile(text), functions=FUNCTIONS)
    return runner


def evaluate(text: str, **variables: Any) -> Any:
    """Evaluate one expression with CEL values bound; a CELEvalError is returned, not raised."""
    try:
        return program(text).evaluate(variables)
    except CELEvalError as error:
        return error
    except Exception as error:  # noqa: BLE001 - celpy raises odd types for odd input
        return CELEvalError(str(error))


def references_old_self(rule: str) -> bool:
    return bool(_OLD_SELF.search(_STRINGS.sub("''", rule)))


def error_text(error: Any) -> str:
    """A celpy error as one line (the first argument is the message)."""
    if isinstance(error, CELEvalError) and error.args:
        first = error.args[0]
        missing = re.match(r"no such member in mapping: '(.*)'$", str(first))
        if missing:
            return f"no such key: {missing.group(1)}"
        detail = error.args[2] if len(error.args) > 2 and error.args[2] else ()
        text = str(first)
        if detail and "no such" not in text:
            text += ": " + "; ".join(str(d) for d in detail)
        return text
    return str(error)


# --- JSON -> CEL, typed by the schema -------------------------------------------------------


def _timestamp(text: str) -> Any:
    return celtypes.TimestampType(text)


def _duration(text: str) -> Any:
    return celtypes.DurationType(text)


def to_cel(value: Any, schema: Schema | None, root: bool = False) -> Any:
    """A JSON value as the CEL value the API server binds for a node of `schema`."""
    if value is None:
        return None
    schema = schema or {}
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, int) and not isinstance(value, bool):
            return celtypes.IntType(value)
        return celtypes.StringType(str(value))
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None or not isinstance(extra, dict):
            free = bool(
                schema.get("x-kubernetes-preserve-unknown-fields")
                or schema.get("x-kubernetes-embedded-resource")
            )
            out = celtypes.MapType()
            for key, sub in value.items():
                name = escape(key)
                if name is None:
                    continue
                if root and key == "metadata" and isinstance(sub, dict):
                    meta = {k: sub[k] for k in ("name", "generateName") if k in sub}
                    out[celtypes.StringType(name)] = celpy.json_to_cel(meta)
                elif props is not None and key in props:
                    out[celtypes.StringType(name)] = to_cel(sub, props[key])
                elif free or props is None:
                    out[celtypes.StringType(name)] = celpy.json_to_cel(sub)
            return out
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, extra) for k, v in value.items()}
        )
    if kind == "array" and isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType(to_cel(v, items) for v in value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return celtypes.IntType(value)
    if kind == "string" and isinstance(value, str):
        fmt = schema.get("format")
        try:
            if fmt in ("date-time", "date"):
                return _timestamp(value if fmt == "date-time" else value + "T00:00:00Z")
            if fmt == "duration":
                return _duration(value)
            if fmt == "byte":
                return celtypes.BytesType(base64.b64decode(value))
        except (ValueError, TypeError):
            pass
        return celtypes.StringType(value)
    return celpy.json_to_cel(value)


# --- walking a schema and a value -----------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    field: str  # "spec.source", "<nil>" for the root
    reason: str  # FieldValueInvalid, FieldValueForbidden, FieldValueRequired, FieldValueDuplicate
    detail: str  # `Invalid value: "object": <message>`

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"

    def cause(self) -> Obj:
        return {"reason": self.reason, "message": self.detail, "field": self.field}


MISSING: Any = object()  # "no old value" (CREATE, or nothing correlates)
_RULES_BELOW: dict[int, tuple[Schema, bool]] = {}


def has_rules(schema: Schema) -> bool:
    """Whether `schema` or anything under it has `x-kubernetes-validations` (cached)."""
    cached = _RULES_BELOW.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    found = bool(schema.get("x-kubernetes-validations"))
    for sub in (schema.get("properties") or {}).values():
        if isinstance(sub, dict) and has_rules(sub):
            found = True
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict) and has_rules(schema[key]):
            found = True
    _RULES_BELOW[id(schema)] = (schema, found)
    return found


def validate(schema: Schema, new: Any, old: Any = MISSING) -> list[Violation]:
    """Every failed `x-kubernetes-validations` rule under `schema` for `new` (with `old` on
    UPDATE), in document order."""
    found: list[Violation] = []
    _walk(schema, new, old, "", found, root=True)
    return found


def _join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(
    schema: Schema, value: Any, old: Any, path: str, out: list[Violation], root: bool
) -> None:
    if value is None or not isinstance(schema, dict) or not has_rules(schema):
        return
    has_old = old is not MISSING and old is not None
    if has_old and value == old:
        return  # ratcheting: an unchanged value is not validated again
    rules = schema.get("x-kubernetes-validations")
    if rules:
        _check_rules(schema, rules, value, old if has_old else MISSING, path, out, root)
    if schema.get("type") == "object" and isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        olds = old if has_old and isinstance(old, dict) else {}
        if props:
            for key, sub in value.items():
                if key in props and not (root and key == "metadata"):
                    _walk(
                        props[key], sub, olds.get(key, MISSING), _join_path(path, key), out, False
                    )
        elif isinstance(extra, dict):
            for key, sub in value.items():
                _walk(extra, sub, olds.get(key, MISSING), f"{path}[{key}]", out, False)
    elif schema.get("type") == "array" and isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, (item, previous) in enumerate(_correlate(schema, value, old, has_old)):
                _walk(items, item, previous, f"{path}[{index}]", out, False)


def _correlate(
    schema: Schema, value: list[Any], old: Any, has_old: bool
) -> Iterator[tuple[Any, Any]]:
    kind = schema.get("x-kubernetes-list-type", "atomic")
    olds = old if has_old and isinstance(old, list) else []
    if kind == "map" and olds:
        keys = schema.get("x-kubernetes-list-map-keys") or []

        def key(item: Any) -> tuple[Any, ...]:
            return tuple(item.get(k) for k in keys) if isinstance(item, dict) else ()

        by_key = {key(o): o for o in olds}
        for item in value:
            yield item, by_key.get(key(item), MISSING)
    elif kind == "set" and olds:
        for item in value:
            yield item, item if item in olds else MISSING
    else:
        for item in value:
            yield item, MISSING


def _type_name(schema: Schema, value: Any) -> str:
    kind = schema.get("type")
    if kind:
        return str(kind)
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "integer" if isinstance(value, int) else "number"
    )


_OUTCOMES: dict[tuple[int, bool, str, str], list[tuple[str, str, str]]] = {}
_SCHEMAS_SEEN: dict[int, Schema] = {}  # keeps the schemas in _OUTCOMES' keys alive
_OUTCOMES_LIMIT = 50_000


def _check_rules(
    schema: Schema,
    rules: list[Obj],
    value: Any,
    old: Any,
    path: str,
    out: list[Violation],
    root: bool,
) -> None:
    """The rules of one node. CEL is pure: the outcome for the same node value (and old value)
    is remembered, which makes the many identical Workflows of a test run cheap."""
    try:
        key = (
            id(schema),
            root,
            json.dumps(value, sort_keys=True, separators=(",", ":")),
            "" if old is MISSING else json.dumps(old, sort_keys=True, separators=(",", ":")),
        )
    except (TypeError, ValueError):
        key = None
    outcome = _OUTCOMES.get(key) if key is not None else None
    if outcome is None:
        outcome = _evaluate_rules(schema, rules, value, old, root)
        if key is not None:
            if len(_OUTCOMES) > _OUTCOMES_LIMIT:
                _OUTCOMES.clear()
            _SCHEMAS_SEEN[id(schema)] = schema
            _OUTCOMES[key] = outcome
    for field_path, reason, detail in outcome:
        where = path
        if field_path:
            where = path + field_path if path else field_path.lstrip(".")
        out.append(Violation(where or "<nil>", reason, detail))


def _evaluate_rules(
    schema: Schema, rules: list[Obj], value: Any, old: Any, root: bool
) -> list[tuple[str, str, str]]:
    """(fieldPath, reason, detail) of each failed rule."""
    found: list[tuple[str, str, str]] = []
    self_value: Any = MISSING
    old_value: Any = MISSING
    type_name = _type_name(schema, value)
    for rule in rules:
        text = str(rule.get("rule", ""))
        transition = references_old_self(text)
        if transition and old is MISSING:
            continue
        if self_value is MISSING:
            self_value = to_cel(value, schema, root)
        variables = {"self": self_value}
        if transition:
            if old_value is MISSING:
                old_value = to_cel(old, schema, root)
            variables["oldSelf"] = old_value
        result = evaluate(text, **variables)
        field_path = str(rule.get("fieldPath") or "")
        if isinstance(result, CELEvalError) or not isinstance(result, bool | celtypes.BoolType):
            problem = (
                error_text(result)
                if isinstance(result, CELEvalError)
                else f"rule {text!r} did not evaluate to a bool"
            )
            found.append(
                (field_path, "FieldValueInvalid", f'Invalid value: "{type_name}": {problem}')
            )
            continue
        if result:
            continue
        message = _message(rule, variables, text)
        reason = rule.get("reason") or "FieldValueInvalid"
        if reason == "FieldValueForbidden":
            detail = f"Forbidden: {message}"
        elif reason == "FieldValueRequired":
            detail = f"Required value: {message}"
        elif reason == "FieldValueDuplicate":
            detail = f"Duplicate value: {message!r}"
        else:
            reason = "FieldValueInvalid"
            detail = f'Invalid value: "{type_name}": {message}'
        found.append((field_path, reason, detail))
    return found


def _message(rule: Obj, variables: dict[str, Any], text: str) -> str:
    expression = rule.get("messageExpression")
    if expression:
        result = evaluate(str(expression), **variables)
        if isinstance(result, str) and result.strip() and "\n" not in result:
            return result.strip()
    if rule.get("message"):
        return str(rule["message"]).strip()
    return f"failed rule: {text.strip()}"


__all__ = [
    "FUNCTIONS",
    "Violation",
    "error_text",
    "escape",
    "has_rules",
    "MISSING",
    "evaluate",
    "program",
    "references_old_self",
    "to_cel",
    "validate",
]
