"""Policy bundles, their pin, and the engine that evaluates them (regorus, in-process).

A policy directory is pinned: `policy-pin.json` records the sha256 of every module and of
data.json, and the bundle digest they make. `load_bundle` refuses a directory whose files do
not match their pin (a module deleted, renamed, added or changed, data.json changed), or that
has no pin, so a policy set cannot drift unnoticed: the gate turns that into a deny.

The engine sits behind `PolicyEngine` so the operator can swap in an OPA server client.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import regorus  # type: ignore[import-untyped]

DATA_FILE = "data.json"
PIN_FILE = "policy-pin.json"
# OPA's bundle manifest: its revision is the bundle digest, its root the product's package.
OPA_MANIFEST = ".manifest"
BUNDLE_ROOTS = ["aiml024"]
PIN_VERSION = 1

T = TypeVar("T")


class PolicyError(Exception):
    """The policies could not be loaded or evaluated; the gate turns this into a deny."""


@dataclass(frozen=True)
class PolicyBundle:
    """The files of a policy directory: non-test .rego sources and data.json, sorted by name."""

    directory: Path
    policies: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]
    digest: str


@dataclass(frozen=True)
class PolicyPin:
    """What `policy-pin.json` records: each module's and data.json's sha256, the bundle digest."""

    modules: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    bundle_digest: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PIN_VERSION,
            "modules": dict(sorted(self.modules.items())),
            "data": self.data,
            "bundleDigest": self.bundle_digest,
        }


class PolicyEngine(Protocol):
    def evaluate(self, bundle: PolicyBundle, query: str, input_doc: dict[str, Any]) -> Any:
        """The value of the rule `query` (None when undefined); raise PolicyError on failure."""
        ...


def file_digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _guard(what: str, action: Callable[[], T]) -> T:
    """Run a filesystem action; any OSError becomes a PolicyError naming what failed."""
    try:
        return action()
    except OSError as error:
        raise PolicyError(f"cannot {what}: {error.strerror or error}") from None


def _bundle_names(policy_dir: Path) -> list[str]:
    """The bundle's file names: top-level *.rego except *_test.rego, and data.json."""
    if not _guard(f"read {policy_dir}", policy_dir.is_dir):
        raise PolicyError(f"policy directory {policy_dir} does not exist")

    def listing() -> list[str]:
        return sorted(
            p.name
            for p in policy_dir.iterdir()
            if (p.suffix == ".rego" and not p.name.endswith("_test.rego") or p.name == DATA_FILE)
            and p.is_file()
        )

    return _guard(f"list {policy_dir}", listing)


def _read(path: Path) -> bytes:
    return _guard(f"read {path}", path.read_bytes)


def _compute(policy_dir: Path) -> tuple[PolicyBundle, PolicyPin]:
    """The bundle as it is on disk, and the pin that would match it. Verifies nothing."""
    names = _bundle_names(policy_dir)
    files: list[tuple[str, str]] = []
    hashes: dict[str, str] = {}
    digest = hashlib.sha256()
    for name in names:
        raw = _read(policy_dir / name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PolicyError(f"cannot read {policy_dir / name}: {error}") from None
        digest.update(f"{name}\0{len(raw)}\0".encode() + raw)
        hashes[name] = file_digest(raw)
        files.append((name, text))
    policies = tuple(f for f in files if f[0].endswith(".rego"))
    bundle = PolicyBundle(
        directory=policy_dir,
        policies=policies,
        data=tuple(f for f in files if f[0] == DATA_FILE),
        digest="sha256:" + digest.hexdigest(),
    )
    pin = PolicyPin(
        modules={n: h for n, h in hashes.items() if n != DATA_FILE},
        data=hashes.get(DATA_FILE),
        bundle_digest=bundle.digest,
    )
    return bundle, pin


def read_pin(policy_dir: Path) -> PolicyPin:
    """The pin recorded in policy_dir; PolicyError when there is none or it is malformed."""
    path = policy_dir / PIN_FILE
    if not _guard(f"read {path}", path.exists):
        raise PolicyError(
            f"the policy set in {policy_dir} is not pinned (no {PIN_FILE}); "
            f"run aiml024 policy pin --dir {policy_dir}"
        )
    try:
        doc = json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise PolicyError(f"{PIN_FILE} is not valid JSON: {error}") from None
    modules, data, bundle_digest = (
        (doc.get("modules"), doc.get("data"), doc.get("bundleDigest"))
        if isinstance(doc, dict)
        else (None, None, None)
    )
    if (
        not isinstance(doc, dict)
        or doc.get("version") != PIN_VERSION
        or not isinstance(modules, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in modules.items())
        or not (data is None or isinstance(data, str))
        or not isinstance(bundle_digest, str)
    ):
        raise PolicyError(
            f"{PIN_FILE} is malformed: expected version {PIN_VERSION}, modules (file -> sha256), "
            "data and bundleDigest; run aiml024 policy pin"
        )
    return PolicyPin(modules=modules, data=data, bundle_digest=bundle_digest)


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest.removeprefix("sha256:")[:12]


def pin_mismatches(pinned: PolicyPin, actual: PolicyPin) -> list[str]:
    """How the files on disk differ from their pin, one phrase per file; [] when they match."""
    problems: list[str] = []
    deleted = sorted(set(pinned.modules) - set(actual.modules))
    added = sorted(set(actual.modules) - set(pinned.modules))
    renamed: dict[str, str] = {}
    for old in deleted:
        new = next(
            (n for n in added if actual.modules[n] == pinned.modules[old] and n not in renamed),
            None,
        )
        if new is not None:
            renamed[new] = old
    for new, old in sorted(renamed.items(), key=lambda item: item[1]):
        problems.append(f"{old} was renamed to {new}")
    for name in deleted:
        if name not in renamed.values():
            problems.append(f"{name} was deleted")
    for name in added:
        if name not in renamed:
            problems.append(f"{name} was added (not in the pin)")
    for name in sorted(set(pinned.modules) & set(actual.modules)):
        if pinned.modules[name] != actual.modules[name]:
            problems.append(
                f"{name} changed (pinned {_short(pinned.modules[name])}, "
                f"now {_short(actual.modules[name])})"
            )
    if pinned.data != actual.data:
        if actual.data is None:
            problems.append(f"{DATA_FILE} was deleted")
        elif pinned.data is None:
            problems.append(f"{DATA_FILE} was added (not in the pin)")
        else:
            problems.append(
                f"{DATA_FILE} changed (pinned {_short(pinned.data)}, now {_short(actual.data)})"
            )
    if not problems and pinned.bundle_digest != actual.bundle_digest:
        problems.append(
            f"{PIN_FILE} records bundleDigest {pinned.bundle_digest}, but its files make "
            f"{actual.bundle_digest}"
        )
    return problems


def _check_opa_manifest(policy_dir: Path, digest: str) -> list[str]:
    """When the directory carries OPA's .manifest, its revision must be the bundle digest."""
    path = policy_dir / OPA_MANIFEST
    if not _guard(f"read {path}", path.exists):
        return []
    try:
        revision = json.loads(_read(path).decode("utf-8")).get("revision")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return [f"{OPA_MANIFEST} is not a JSON object"]
    if revision != digest:
        return [f"{OPA_MANIFEST} revision {revision} is not the bundle digest {digest}"]
    return []


def load_bundle(
    policy_dir: Path, *, verify_pin: bool = True, expected_digest: str | None = None
) -> PolicyBundle:
    """Read a policy directory (top level only) and check it against its pin.

    *_test.rego files are not part of the bundle. Raises PolicyError when the directory cannot
    be read, holds no policies, has no pin or does not match it, or when `expected_digest` is
    given and the bundle digest differs.
    """
    policy_dir = Path(policy_dir)
    bundle, actual = _compute(policy_dir)
    if not bundle.policies:
        raise PolicyError(f"no policies (*.rego other than *_test.rego) in {policy_dir}")
    if verify_pin:
        problems = pin_mismatches(read_pin(policy_dir), actual) or _check_opa_manifest(
            policy_dir, bundle.digest
        )
        if problems:
            raise PolicyError(
                f"policy set does not match its pin: {'; '.join(problems)} "
                f"(if the change is intended, run aiml024 policy pin --dir {policy_dir})"
            )
    if expected_digest and bundle.digest != expected_digest:
        raise PolicyError(
            f"the policy bundle in {policy_dir} is {bundle.digest}, not the expected "
            f"{expected_digest} (AIML024_POLICY_DIGEST)"
        )
    return bundle


def write_pin(policy_dir: Path) -> PolicyPin:
    """Pin the policy set as it is now: write policy-pin.json and OPA's .manifest."""
    policy_dir = Path(policy_dir)
    bundle, pin = _compute(policy_dir)
    if not bundle.policies:
        raise PolicyError(f"no policies (*.rego other than *_test.rego) in {policy_dir}")
    manifest = {"revision": pin.bundle_digest, "roots": BUNDLE_ROOTS, "rego_version": 1}
    for name, doc in ((PIN_FILE, pin.to_json()), (OPA_MANIFEST, manifest)):
        try:
            (policy_dir / name).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise PolicyError(f"cannot write {policy_dir / name}: {error.strerror}") from None
    return pin


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
TEST_SUFFIX = "_test.rego"


@dataclass(frozen=True)
class RegoTestResult:
    """One Rego test: `PASS` when the rule is true, `FAIL` when it is false or undefined,
    `ERROR` when evaluating it failed (`detail` says why). `prints` is its print() output."""

    rule: str
    outcome: str
    detail: str = ""
    prints: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.outcome == "PASS"


def _test_files(policy_dir: Path) -> tuple[tuple[str, str], ...]:
    paths = _guard(f"list {policy_dir}", lambda: sorted(policy_dir.glob(f"*{TEST_SUFFIX}")))
    files: list[tuple[str, str]] = []
    for path in paths:
        try:
            files.append((path.name, _read(path).decode("utf-8")))
        except UnicodeDecodeError as error:
            raise PolicyError(f"cannot read {path}: {error}") from None
    return tuple(files)


def _test_engine(policy_dir: Path, verify_pin: bool) -> Any:
    """A regorus engine with the bundle, its data and every *_test.rego file loaded.

    PolicyError when a file cannot be read or a module (test or not) does not compile."""
    return RegorusEngine().load(
        load_bundle(Path(policy_dir), verify_pin=verify_pin), _test_files(Path(policy_dir))
    )


def _test_rules(engine: Any) -> list[str]:
    """The rule paths (`data.<package>.test_x`) of the test rules the engine holds, in file
    order: rules (not functions) whose name starts with `test_`, in any module."""
    found: list[str] = []
    for module in json.loads(engine.get_ast_as_json()):
        declared = _PACKAGE.search(module["source"]["contents"])
        package = f"data.{declared.group(1)}" if declared else None
        for rule in module["ast"]["rules"]:
            for kind, head in rule.get("Spec", {}).get("head", {}).items():
                name = head.get("refr", {}).get("Var", {}).get("value", "")
                path = f"{package}.{name}"
                if package and kind != "Func" and name.startswith("test_") and path not in found:
                    found.append(path)
    return found


def rego_tests(policy_dir: Path) -> list[str]:
    """The rule paths (`data.<package>.test_x`) of every Rego test in policy_dir (pinned)."""
    return _test_rules(_test_engine(policy_dir, verify_pin=True))


def _run_one(engine: Any, rule: str) -> RegoTestResult:
    engine = engine.clone()
    engine.set_gather_prints(True)
    try:
        value = engine.eval_rule(rule)
    except RuntimeError as error:
        return RegoTestResult(rule, "ERROR", describe_error(error), tuple(engine.take_prints()))
    return RegoTestResult(
        rule, "PASS" if value is True else "FAIL", "", tuple(engine.take_prints())
    )


def run_rego_test(policy_dir: Path, rule: str) -> bool:
    """Evaluate one test rule with the bundle (pinned), its data and the test files loaded."""
    result = _run_one(_test_engine(policy_dir, verify_pin=True), rule)
    if result.outcome == "ERROR":
        raise PolicyError(f"{rule}: {result.detail}")
    return result.passed


def run_rego_tests(
    policy_dir: Path, *, verify_pin: bool = False, match: str | None = None
) -> list[RegoTestResult]:
    """Run every Rego test in policy_dir (as `opa test` does): each `test_*` rule of every
    module, with the bundle's modules, data.json and the *_test.rego files loaded.

    The pin is not checked unless `verify_pin` (tests run before a change is pinned).
    `match` is a regular expression a test's rule path must contain (re.search).
    Raises PolicyError when a file cannot be read or a module does not compile."""
    engine = _test_engine(policy_dir, verify_pin)
    rules = _test_rules(engine)
    if match is not None:
        try:
            pattern = re.compile(match)
        except re.error as error:
            raise PolicyError(f"--run {match!r} is not a regular expression: {error}") from None
        rules = [rule for rule in rules if pattern.search(rule)]
    return [_run_one(engine, rule) for rule in rules]
