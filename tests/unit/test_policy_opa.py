"""OPA, locked down: its authorization policy (regorus), and the operator's client of it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import regorus  # type: ignore[import-untyped]
from tests.unit.test_policy_deployment import deployment, env, served
from tests.unit.test_policy_gate import POLICIES, approval, make_model

from aiml024.operator.config import OperatorConfig
from aiml024.operator.policy import OpaEngine, deployment_gate, gate
from aiml024.policy import load_bundle

AUTHZ = Path(__file__).resolve().parents[2] / "manifests" / "opa" / "authz.rego"
TOKEN = "f" * 64
DIGEST = load_bundle(POLICIES).digest

# --- manifests/opa/authz.rego, evaluated with regorus --------------------------------------


def authorized(
    method: str, path: str, identity: str | None = TOKEN, configured: str | None = TOKEN
) -> bool:
    engine = regorus.Engine()
    engine.add_policy("authz.rego", AUTHZ.read_text())
    request: dict[str, Any] = {
        "method": method,
        "path": path.lstrip("/").split("/"),
        "params": {},
        "headers": {},
    }
    if identity is not None:
        request["identity"] = identity
    runtime = {"env": {} if configured is None else {"AIML024_OPA_TOKEN": configured}}
    answer = engine.eval_query(
        f"data.system.authz.allow with input as {json.dumps(request)} "
        f"with opa.runtime as {json.dumps(runtime)}"
    )
    value = answer["result"][0]["expressions"][0]["value"]
    assert isinstance(value, dict) and isinstance(value.get("allowed"), bool), value
    return bool(value["allowed"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/data/aiml024/promotion/result"),
        ("POST", "/v1/data/aiml024/deployment/result"),
        ("GET", "/v1/data/aiml024/promotion/result"),
        ("GET", "/v1/data/system/bundles"),
    ],
)
def test_the_operator_may_query_and_read_bundles(method: str, path: str) -> None:
    assert authorized(method, path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/policies/promotion.rego"),
        ("DELETE", "/v1/policies/promotion.rego"),
        ("PUT", "/v1/data/aiml024/thresholds"),
        ("PATCH", "/v1/data/aiml024/thresholds"),
        ("DELETE", "/v1/data/aiml024/thresholds"),
        ("PUT", "/v1/data"),
        ("PATCH", "/v1/data"),
        ("POST", "/v1/data/system/bundles"),
        ("PUT", "/v1/data/system/bundles"),
    ],
)
def test_writes_are_refused_even_with_the_token(method: str, path: str) -> None:
    assert not authorized(method, path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/policies"),  # the policy source
        ("POST", "/v1/query"),  # ad-hoc queries could read opa.runtime().env
        ("GET", "/v1/query"),
        ("POST", "/v1/compile"),
        ("GET", "/v1/config"),
        ("GET", "/v1/status"),
        ("POST", "/"),
        ("GET", "/metrics"),
        ("GET", "/v1/data"),
        ("POST", "/v1/data"),
        ("GET", "/v1/data/aiml024"),
        ("POST", "/v1/data/system/authz/allow"),
        ("GET", "/v1/data/system/authz/token"),
        ("POST", "/v1/data/aiml024/../system/authz/token"),
        ("POST", "/v1/data/aiml024//promotion"),
        ("GET", "/health/ready"),
    ],
)
def test_everything_else_is_refused_even_with_the_token(method: str, path: str) -> None:
    assert not authorized(method, path)


def test_a_wrong_or_missing_token_is_refused() -> None:
    query = ("POST", "/v1/data/aiml024/promotion/result")
    assert not authorized(*query, identity="e" * 64)
    assert not authorized(*query, identity=None)
    assert not authorized(*query, identity="")
    assert not authorized("GET", "/v1/data/system/bundles", identity="e" * 64)


def test_no_or_a_short_configured_token_refuses_everyone() -> None:
    query = ("POST", "/v1/data/aiml024/promotion/result")
    assert not authorized(*query, identity="", configured=None)
    assert not authorized(*query, identity="", configured="")
    assert not authorized(*query, identity="short", configured="short")


def test_health_is_open_for_the_kubelet() -> None:
    assert authorized("GET", "/health", identity=None)
    assert not authorized("POST", "/health", identity=None)


# --- the operator's OPA client, against a stand-in OPA ---------------------------------------


@dataclass
class FakeOpa:
    """Answers like OPA with token authentication: 401 without the token."""

    revision: str | None = DIGEST
    roots: list[str] = field(default_factory=lambda: ["aiml024"])
    result: Any = field(default_factory=lambda: {"decision": "allow", "violations": []})
    provenance_revision: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        if path.split("?")[0] == "/v1/data/system/bundles" and method == "GET":
            manifest: dict[str, Any] = {"roots": self.roots}
            if self.revision is not None:
                manifest["revision"] = self.revision
            return 200, {
                "result": {
                    "/bundles/aiml024": {"manifest": manifest},
                    "/bundles/authz": {"manifest": {"revision": "x", "roots": ["system/authz"]}},
                }
            }
        if path.startswith("/v1/data/aiml024/") and method == "POST":
            body: dict[str, Any] = {"result": self.result}
            if "provenance=true" in path:
                body["provenance"] = {
                    "version": "1.4.2",
                    "bundles": {
                        "/bundles/aiml024": {"revision": self.provenance_revision or self.revision}
                    },
                }
            return 200, body
        return 404, {"code": "undefined_document"}


@pytest.fixture
def opa() -> Iterator[tuple[FakeOpa, str]]:
    fake = FakeOpa()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            auth = self.headers.get("Authorization")
            fake.requests.append((self.command, self.path, auth))
            code, body = (
                fake.answer(self.command, self.path)
                if auth == f"Bearer {TOKEN}"
                else (401, {"code": "unauthorized", "message": "request rejected"})
            )
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _serve

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def config(url: str, **settings: Any) -> OperatorConfig:
    fields: dict[str, Any] = {
        "opa_url": url,
        "policy_timeout": 2.0,
        "policy_dir": POLICIES,
        "opa_token": TOKEN,
    }
    fields.update(settings)
    return OperatorConfig(**fields)


def promote(cfg: OperatorConfig) -> tuple[str, list[str], str]:
    result = asyncio.run(gate(cfg, make_model(), "production", [approval("bob")]))
    return result.decision, result.violations, result.bundle_digest


def test_opa_decides_with_the_token_on_every_request(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    assert promote(config(url)) == ("allow", [], DIGEST)
    assert [(m, p.split("?")[0]) for m, p, _ in fake.requests] == [
        ("GET", "/v1/data/system/bundles"),
        ("POST", "/v1/data/aiml024/promotion/result"),
    ]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in fake.requests)


def test_token_from_a_mounted_file(opa: tuple[FakeOpa, str], tmp_path: Path) -> None:
    _, url = opa
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert promote(config(url, opa_token=None, opa_token_file=token_file))[0] == "allow"
    token_file.write_text("rotated-but-wrong")
    decision, violations, _ = promote(config(url, opa_token=None, opa_token_file=token_file))
    assert decision == "deny" and "unauthorized" in violations[0]


def test_no_token_denies_without_asking(opa: tuple[FakeOpa, str], tmp_path: Path) -> None:
    fake, url = opa
    decision, violations, _ = promote(config(url, opa_token=None))
    assert decision == "deny"
    assert violations == [
        "policy_error: no token for the OPA server; set AIML024_OPA_TOKEN_FILE (a mounted "
        "Secret) or AIML024_OPA_TOKEN"
    ]
    missing = tmp_path / "absent"
    decision, violations, _ = promote(config(url, opa_token=None, opa_token_file=missing))
    assert violations == [
        f"policy_error: cannot read the OPA token from {missing}: No such file or directory"
    ]
    assert fake.requests == []


def test_a_wrong_token_denies(opa: tuple[FakeOpa, str]) -> None:
    _, url = opa
    decision, violations, _ = promote(config(url, opa_token="e" * 64))
    assert decision == "deny"
    assert violations[0].startswith("policy_error: OPA server: cannot read its bundles")


def test_another_bundle_revision_denies(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    fake.revision = "sha256:" + "9" * 64
    decision, violations, _ = promote(config(url))
    assert decision == "deny"
    assert violations == [
        f"policy_error: OPA server serves policy bundle /bundles/aiml024 at revision {fake.revision}, "
        f"not the pinned policy set {DIGEST}"
    ]
    assert [m for m, _, _ in fake.requests] == ["GET"]  # never asked for a decision


def test_a_bundle_without_revision_or_root_denies(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    fake.revision = None
    assert "at revision None" in promote(config(url))[1][0]
    fake.revision, fake.roots = DIGEST, ["other"]
    assert promote(config(url))[1] == [
        "policy_error: OPA server serves no policy bundle with root aiml024 (its bundles have no "
        ".manifest, or OPA was not started with --bundle)"
    ]


def test_a_decision_from_another_revision_denies(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    fake.provenance_revision = "sha256:reloaded"
    decision, violations, _ = promote(config(url))
    assert decision == "deny"
    assert violations[0].startswith(
        "policy_error: OPA server decided with policy bundle /bundles/aiml024 at revision "
        "sha256:reloaded"
    )


def test_the_expected_digest_is_enforced_before_opa(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    other = "sha256:" + "2" * 64
    decision, violations, digest = promote(config(url, expected_policy_digest=other))
    assert decision == "deny"
    assert violations[0].endswith(f"is {DIGEST}, not the expected {other} (AIML024_POLICY_DIGEST)")
    assert fake.requests == []
    assert promote(config(url, expected_policy_digest=DIGEST))[0] == "allow"


def test_opa_unreachable_denies() -> None:
    decision, violations, _ = promote(config("http://127.0.0.1:9", policy_timeout=0.5))
    assert decision == "deny" and violations[0].startswith("policy_error: OPA server: ")


def test_an_engine_failure_outside_the_gate_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("no thread for you")

    monkeypatch.setattr(asyncio, "to_thread", broken)
    decision, violations, _ = promote(config("http://127.0.0.1:9"))
    assert (decision, violations) == (
        "deny",
        ["policy_error: unexpected error: RuntimeError: no thread for you"],
    )


def test_the_engine_closes_its_connection(opa: tuple[FakeOpa, str]) -> None:
    _, url = opa
    engine = OpaEngine(url, 1.0, TOKEN)
    assert engine.evaluate(load_bundle(POLICIES), "data.aiml024.promotion.result", {}) == {
        "decision": "allow",
        "violations": [],
    }
    assert engine._client is None


def test_deployment_gate_through_opa(opa: tuple[FakeOpa, str]) -> None:
    fake, url = opa
    models = [("stable", served("churn-v3")), ("canary", served("churn-v4"))]
    result = asyncio.run(deployment_gate(config(url), deployment(), models, env("production")))
    assert (result.decision, result.bundle_digest, result.stage) == ("allow", DIGEST, "production")
    assert fake.requests[-1][1].startswith("/v1/data/aiml024/deployment/result")

    fake.result = {"decision": "require_approval", "violations": []}
    result = asyncio.run(deployment_gate(config(url), deployment(), models, env("production")))
    assert result.decision == "deny"


def test_deployment_gate_in_process() -> None:
    cfg = OperatorConfig(policy_dir=POLICIES)
    models = [("stable", served("churn-v3")), ("canary", served("churn-v4", decision=None))]
    result = asyncio.run(deployment_gate(cfg, deployment(), models, env("production")))
    assert result.decision == "deny"
    assert result.violations[0].startswith("model_no_decision: churn-v4 (canary)")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIML024_POLICY_DIGEST", DIGEST)
    monkeypatch.setenv("AIML024_OPA_TOKEN", TOKEN)
    monkeypatch.setenv("AIML024_OPA_TOKEN_FILE", "/var/run/secrets/aiml024-opa/token")
    cfg = OperatorConfig.from_env()
    assert cfg.expected_policy_digest == DIGEST
    assert cfg.opa_token == TOKEN
    assert cfg.opa_token_file == Path("/var/run/secrets/aiml024-opa/token")
    assert TOKEN not in repr(cfg)
    for name in ("AIML024_POLICY_DIGEST", "AIML024_OPA_TOKEN", "AIML024_OPA_TOKEN_FILE"):
        monkeypatch.delenv(name)
    cfg = OperatorConfig.from_env()
    assert (cfg.expected_policy_digest, cfg.opa_token, cfg.opa_token_file) == (None, None, None)
