"""Policy bundles and the engine that evaluates them (regorus, in-process).

The engine sits behind `PolicyEngine` so the operator can swap in an OPA server client.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import regorus  # type: ignore[import-untyped]

DATA_FILE = "data.json"


class PolicyError(Exception):
    """The policies could not be loaded or evaluated; the gate turns this into a deny."""


@dataclass(frozen=True)
class PolicyBundle:
    """The files of a policy directory: non-test .rego sources and data.json, sorted by name."""

    directory: Path
    policies: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]
    digest: str


class PolicyEngine(Protocol):
    def evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        """The value of the rule `query` (None when undefined); raise PolicyError on failure."""
        ...


def load_bundle(policy_dir: Path) -> PolicyBundle:
    """Read a policy directory (top level only); *_test.rego files are not part of the bundle."""
    if not policy_dir.is_dir():
        raise PolicyError(f"policy directory {policy_dir} does not exist")
    names = sorted(
        p.name
        for p in policy_dir.iterdir()
        if p.is_file()
        and ((p.suffix == ".rego" and not p.name.endswith("_test.rego")) or p.name == DATA_FILE)
    )
    files: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    for name in names:
        try:
            raw = (policy_dir / name).read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyError(f"cannot read {policy_dir / name}: {error}") from None
        digest.update(f"{name}\0{len(raw)}\0".encode() + raw)
        files.append((name, text))
    policies = tuple(f for f in files if f[0].endswith(".rego"))
    if not policies:
        raise PolicyError(f"no policies (*.rego other than *_test.rego) in {policy_dir}")
    return PolicyBundle(
        directory=policy_dir,
        policies=policies,
        data=tuple(f for f in files if f[0] == DATA_FILE),
        digest="sha256:" + digest.hexdigest(),
    )


def describe_error(error: Exception) -> str:
    """regorus' message without its Rust backtrace: `file.rego:line:col: what is wrong`."""
    text = str(error).split("Stack backtrace:")[0]
    where = re.search(r"-->\s*(\S+)", text)
    what = re.findall(r"^error: (.*)$", text, re.MULTILINE)
    if what:
        return f"{where.group(1)}: {what[-1]}" if where else what[-1]
    return " ".join(text.split()) or type(error).__name__


class RegorusEngine:
    """Evaluates a bundle in-process with regorus (Rego v1)."""

    def load(self, bundle: PolicyBundle, extra: tuple[tuple[str, str], ...] = ()) -> Any:
        engine = regorus.Engine()
        for name, text in (*bundle.policies, *extra):
            try:
                engine.add_policy(name, text)
            except RuntimeError as error:
                raise PolicyError(describe_error(error)) from None
        for name, text in bundle.data:
            try:
                engine.add_data_json(text)
            except RuntimeError as error:
                raise PolicyError(f"{name}: {describe_error(error)}") from None
        return engine

    def evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        engine = self.load(bundle)
        try:
            document = json.dumps(input_doc, allow_nan=False)
        except ValueError as error:
            raise PolicyError(f"the input document is not valid JSON: {error}") from None
        try:
            engine.set_input_json(document)
            return engine.eval_rule(query)
        except RuntimeError as error:
            if "not a valid rule path" in str(error):  # regorus: no policy defines the rule
                return None
            raise PolicyError(f"evaluating {query} failed: {describe_error(error)}") from None


# --- Rego unit tests (`test_*` rules in *_test.rego), run through regorus -------------------


_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.MULTILINE)


def _test_files(policy_dir: Path) -> tuple[tuple[str, str], ...]:
    return tuple(
        (p.name, p.read_text(encoding="utf-8")) for p in sorted(policy_dir.glob("*_test.rego"))
    )


def rego_tests(policy_dir: Path) -> list[str]:
    """The rule paths (`data.<package>.test_x`) of every Rego test in policy_dir."""
    engine = RegorusEngine().load(load_bundle(policy_dir), _test_files(policy_dir))
    found: list[str] = []
    for module in json.loads(engine.get_ast_as_json()):
        declared = _PACKAGE.search(module["source"]["contents"])
        package = f"data.{declared.group(1)}" if declared else None
        for rule in module["ast"]["rules"]:
            for head in rule.get("Spec", {}).get("head", {}).values():
                name = head.get("refr", {}).get("Var", {}).get("value", "")
                path = f"{package}.{name}"
                if package and name.startswith("test_") and path not in found:
                    found.append(path)
    return found


def run_rego_test(policy_dir: Path, rule: str) -> bool:
    """Evaluate one test rule with the bundle, its data and the test files loaded."""
    engine = RegorusEngine().load(load_bundle(policy_dir), _test_files(policy_dir))
    try:
        return engine.eval_rule(rule) is True
    except RuntimeError as error:
        raise PolicyError(f"{rule}: {describe_error(error)}") from None
