"""The operator's installation settings, read once from the environment at startup (the SLO
timer's interval at import: kopf needs it when the handlers register)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..compiler import CompileOptions
from ..policy import default_policy_dir


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def slo_interval() -> float:
    """Seconds between SLO checks of a canary ($AIML024_SLO_INTERVAL, default 30)."""
    return _float("AIML024_SLO_INTERVAL", 30.0)


@dataclass(frozen=True)
class OperatorConfig:
    compile: CompileOptions = field(default_factory=CompileOptions)
    policy_dir: Path = field(default_factory=default_policy_dir)
    opa_url: str | None = None  # e.g. http://aiml024-opa.aiml024-system.svc:8181
    policy_timeout: float = 2.0
    # The bundle digest the policies must have (`aiml024 policy pin` prints it); unset: any
    # pinned policy set. OPA must serve the same digest as its bundle revision either way.
    expected_policy_digest: str | None = None
    # The bearer token for OPA: a file (a mounted Secret, read on every call) or the value.
    opa_token: str | None = field(default=None, repr=False)
    opa_token_file: Path | None = None
    prometheus_url: str | None = None
    # Where each predictor's own metrics are when there is no Prometheus (Seldon v1 names the
    # predictor Service <deployment>-<predictor>; its executor serves /prometheus on 8000).
    metrics_url: str = "http://{deployment}-{predictor}.{namespace}.svc:8000/prometheus"
    retry_delay: float = 10.0
    webhook_port: int = 9443
    webhook_cert_dir: Path = Path("/certs")
    webhook_host: str | None = None
    operator_user: str = "system:serviceaccount:aiml024-system:aiml024-operator"
    # Where the audit log is kept (aiml024.audit); unset: the artifact store. Point it at a
    # bucket only the operator writes (ideally with object versioning or object lock).
    audit_store: str | None = None

    @property
    def audit_root(self) -> str:
        return self.audit_store or self.compile.artifact_store

    @classmethod
    def from_env(cls) -> OperatorConfig:
        env = os.environ.get
        defaults = CompileOptions()
        compile_options = CompileOptions(
            image=env("AIML024_RUNTIME_IMAGE") or defaults.image,
            artifact_store=env("AIML024_ARTIFACT_STORE") or defaults.artifact_store,
            study_storage=env("AIML024_STUDY_STORAGE") or defaults.study_storage,
            card_key_secret=env("AIML024_CARD_KEY_SECRET") or "aiml024-card-signing-key",
        )
        return cls(
            compile=compile_options,
            policy_dir=default_policy_dir(),
            opa_url=env("AIML024_OPA_URL") or None,
            policy_timeout=_float("AIML024_POLICY_TIMEOUT", 2.0),
            expected_policy_digest=env("AIML024_POLICY_DIGEST") or None,
            opa_token=env("AIML024_OPA_TOKEN") or None,
            opa_token_file=_path("AIML024_OPA_TOKEN_FILE"),
            prometheus_url=env("AIML024_PROMETHEUS_URL") or None,
            metrics_url=env("AIML024_METRICS_URL") or cls.metrics_url,
            retry_delay=_float("AIML024_RETRY_DELAY", 10.0),
            webhook_port=int(env("AIML024_WEBHOOK_PORT") or 9443),
            webhook_cert_dir=Path(env("AIML024_WEBHOOK_CERT_DIR") or "/certs"),
            webhook_host=env("AIML024_WEBHOOK_HOST") or None,
            operator_user=env("AIML024_OPERATOR_USER") or cls.operator_user,
            audit_store=env("AIML024_AUDIT_STORE") or None,
        )
