"""A small async Kubernetes API client for the operator's own reads and writes.

kopf talks to the API for watching and for its own bookkeeping; the handlers need plain CRUD
on other objects (Workflows, Models, SeldonDeployments...). This client shares kopf's
connection settings and aiohttp, so the operator image needs no kubernetes client library.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kopf

Obj = dict[str, Any]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Res:
    """A resource type: where its objects live on the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def url(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            root += f"/namespaces/{namespace}"
        return root + f"/{self.plural}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


EXPERIMENTS = Res("aiml024.io", "v1alpha1", "experiments", "Experiment")
MODELS = Res("aiml024.io", "v1alpha1", "models", "Model")
DEPLOYMENTS = Res("aiml024.io", "v1alpha1", "deployments", "Deployment")
WORKFLOWS = Res("argoproj.io", "v1alpha1", "workflows", "Workflow")
SELDON = Res("machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment")
SERVICE_MONITORS = Res("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
PROMETHEUS_RULES = Res("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule")
NAMESPACES = Res("", "v1", "namespaces", "Namespace", namespaced=False)
ACCESS_REVIEWS = Res(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False
)
BY_KIND = {
    r.kind: r
    for r in (
        EXPERIMENTS,
        MODELS,
        DEPLOYMENTS,
        WORKFLOWS,
        SELDON,
        SERVICE_MONITORS,
        PROMETHEUS_RULES,
    )
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


class NotFound(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Conflict(ApiError):
    """A stale resourceVersion: read again and decide again."""


@dataclass
class Connection:
    """Where the API server is and how to authenticate; the token file is re-read as it rotates."""

    server: str
    token: str | None = None
    token_path: Path | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False
    default_namespace: str | None = None
    _token_read_at: float = field(default=0.0, repr=False)

    @classmethod
    def from_environment(cls) -> Connection | None:
        """$AIML024_KUBE_URL (+ $AIML024_KUBE_TOKEN), else the pod's service account, else None
        (then kopf's kubeconfig login is used and `from_kopf` builds this from it)."""
        url = os.environ.get("AIML024_KUBE_URL")
        if url:
            return cls(
                server=url,
                token=os.environ.get("AIML024_KUBE_TOKEN") or None,
                insecure=os.environ.get("AIML024_KUBE_INSECURE") == "1",
            )
        if (SA_DIR / "token").exists():
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            namespace = (
                (SA_DIR / "namespace").read_text().strip()
                if (SA_DIR / "namespace").exists()
                else None
            )
            return cls(
                server=f"https://{host}:{port}",
                token_path=SA_DIR / "token",
                ca_path=str(SA_DIR / "ca.crt"),
                default_namespace=namespace,
            )
        return None

    @classmethod
    def from_kopf(cls, info: kopf.ConnectionInfo) -> Connection:
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        return cls(
            server=info.server,
            token=info.token,
            ca_path=_str(info.ca_path),
            ca_data=ca_data,
            cert_path=_str(info.certificate_path),
            key_path=_str(info.private_key_path),
            insecure=bool(info.insecure),
            default_namespace=info.default_namespace,
        )

    def as_kopf(self) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=self.server,
            token=self.bearer(),
            ca_path=self.ca_path,
            ca_data=self.ca_data,
            certificate_path=self.cert_path,
            private_key_path=self.key_path,
            insecure=self.insecure or None,
            default_namespace=self.default_namespace,
        )

    def bearer(self) -> str | None:
        if self.token_path is not None and time.monotonic() - self._token_read_at > 60:
            self.token = self.token_path.read_text().strip()
            self._token_read_at = time.monotonic()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_path, cadata=self.ca_data)
        if self.cert_path and self.key_path:
            context.load_cert_chain(self.cert_path, self.key_path)
        return context


def _str(value: Any) -> str | None:
    return os.fsdecode(value) if value is not None else None


class Kube:
    """CRUD over the API with typed errors; one aiohttp session per operator run."""

    def __init__(self, connection: Connection, timeout: float = 30):
        self.connection = connection
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Obj:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context(), limit=64)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        token = self.connection.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self._session.request(
            method, self.connection.server + path, json=body, headers=headers
        ) as rsp:
            payload = await rsp.json(content_type=None) if rsp.content_length != 0 else {}
            if rsp.status < 400:
                return payload or {}
            reason = (payload or {}).get("reason", rsp.reason or "")
            message = (payload or {}).get("message", "")
            error = {404: NotFound, 409: AlreadyExists if reason == "AlreadyExists" else Conflict}
            raise error.get(rsp.status, ApiError)(rsp.status, reason, message)

    async def get(self, res: Res, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", res.url(namespace, name))
        except NotFound:
            return None

    async def list(self, res: Res, namespace: str | None = None, selector: str = "") -> list[Obj]:
        path = res.url(namespace) + (f"?labelSelector={selector}" if selector else "")
        items: list[Obj] = (await self.request("GET", path)).get("items", [])
        return items

    async def create(self, res: Res, manifest: Obj) -> Obj:
        return await self.request("POST", res.url(manifest["metadata"].get("namespace")), manifest)

    async def ensure(self, res: Res, manifest: Obj) -> tuple[Obj, bool]:
        """Create unless it exists (AlreadyExists is success): (the object, whether created)."""
        try:
            return await self.create(res, manifest), True
        except AlreadyExists:
            meta = manifest["metadata"]
            existing = await self.get(res, meta.get("namespace"), meta["name"])
            if existing is None:  # deleted in between: the next event retries
                raise
            return existing, False

    async def allowed(
        self, user: str, groups: list[str], verb: str, res: Res, namespace: str, name: str
    ) -> bool:
        """Whether the API server's authorizer lets `user` do `verb` (a SubjectAccessReview)."""
        review = {
            "apiVersion": ACCESS_REVIEWS.api_version,
            "kind": ACCESS_REVIEWS.kind,
            "metadata": {},
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "group": res.group, "resource": res.plural, "verb": verb,
                    "namespace": namespace, "name": name,
                },
            },
        }  # fmt: skip
        answer = await self.create(ACCESS_REVIEWS, review)
        return bool((answer.get("status") or {}).get("allowed"))

    async def merge_patch(
        self, res: Res, namespace: str | None, name: str, patch: Obj, sub: str | None = None
    ) -> Obj:
        return await self.request(
            "PATCH", res.url(namespace, name, sub), patch, "application/merge-patch+json"
        )

    async def json_patch(self, res: Res, namespace: str | None, name: str, ops: list[Obj]) -> Obj:
        """A failed `test` op (the API answers 422) is a Conflict: read again, decide again."""
        try:
            return await self.request(
                "PATCH", res.url(namespace, name), ops, "application/json-patch+json"
            )
        except ApiError as error:
            if error.code == 422 and any(op.get("op") == "test" for op in ops):
                raise Conflict(409, "Conflict", error.message) from None
            raise

    async def replace_status(self, res: Res, body: Obj, status: Obj) -> Obj | None:
        """Make `status` the object's whole status, if `body` is still the latest version
        (Conflict otherwise). None when nothing changed, so no write and no watch event."""
        old = body.get("status") or {}
        if old == status:
            return None
        meta = body["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": merge_diff(old, status),
        }
        return await self.merge_patch(res, meta.get("namespace"), meta["name"], patch, "status")

    async def delete(self, res: Res, namespace: str | None, name: str) -> None:
        try:
            await self.request("DELETE", res.url(namespace, name))
        except NotFound:
            pass


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: Obj = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch
