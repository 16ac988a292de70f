"""The operator's own reads and writes on the Kubernetes API, through kubernetes_asyncio.

kopf talks to the API for watching and for its own bookkeeping; the handlers need plain CRUD
on other objects (Workflows, Models, SeldonDeployments...). `Kube` is that CRUD over the
maintained client (kubernetes_asyncio, on the aiohttp that kopf brings too), with typed errors
(NotFound, AlreadyExists, Conflict) and writes conditional on what was read. It connects where
kopf does: $AIML024_KUBE_URL, else the pod's service account, else kopf's kubeconfig login.
bench/README.md records what it costs against the hand-written aiohttp client it replaced.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from ..api.common import GROUP, VERSION

Obj = dict[str, Any]
Objs = list[Obj]  # spelled apart: inside Kube, `list` is its method
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A write that met a newer version is decided again from a fresh read, this many times.
CONFLICT_ATTEMPTS = 5


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

    @property
    def selector(self) -> tuple[str, str, str]:
        """The resource as kopf's handler decorators name it: group, version, plural."""
        return self.group, self.version, self.plural


EXPERIMENTS = Res(GROUP, VERSION, "experiments", "Experiment")
MODELS = Res(GROUP, VERSION, "models", "Model")
DEPLOYMENTS = Res(GROUP, VERSION, "deployments", "Deployment")
WORKFLOWS = Res("argoproj.io", "v1alpha1", "workflows", "Workflow")
CRON_WORKFLOWS = Res("argoproj.io", "v1alpha1", "cronworkflows", "CronWorkflow")
SELDON = Res("machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment")
SERVICE_MONITORS = Res("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
PROMETHEUS_RULES = Res("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule")
NAMESPACES = Res("", "v1", "namespaces", "Namespace", namespaced=False)
BY_KIND = {
    r.kind: r
    for r in (
        EXPERIMENTS,
        MODELS,
        DEPLOYMENTS,
        WORKFLOWS,
        CRON_WORKFLOWS,
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


def _error(error: ApiException) -> ApiError:
    """The typed error for what the API server answered (its Status body, when it sent one)."""
    status: Obj = {}
    try:
        body = error.body.decode() if isinstance(error.body, bytes) else error.body
        status = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        pass
    if not isinstance(status, dict):
        status = {}
    code = int(error.status or 0)
    reason = str(status.get("reason") or error.reason or "")
    message = str(status.get("message") or "")
    kinds = {404: NotFound, 409: AlreadyExists if reason == "AlreadyExists" else Conflict}
    return kinds.get(code, ApiError)(code, reason, message)


def controlled_by(child: Obj, owner: Obj) -> bool:
    """Whether `owner` controls `child` (the operator created it for it): an owner reference
    with the owner's uid and `controller: true`. A same-named object anyone else made is
    never adopted."""
    uid = owner["metadata"].get("uid")
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in child["metadata"].get("ownerReferences") or []
    )


async def settle(what: str, once: Callable[[], Awaitable[None]]) -> None:
    """Run `once` (read, decide, write) until its writes meet no newer version; after
    CONFLICT_ATTEMPTS, kopf retries the handler a moment later."""
    for _attempt in range(CONFLICT_ATTEMPTS):
        try:
            await once()
            return
        except Conflict:
            continue  # someone wrote in between: read again, decide again
    raise kopf.TemporaryError(f"{what} kept changing while reconciling", delay=1)


@dataclass
class Connection:
    """Where the API server is and how to authenticate; the token file is re-read as it rotates."""

    server: str
    token: str | None = None
    token_path: Path | None = None
    ca_path: str | None = None
    ca_data: str | None = None  # PEM, or base64 of PEM as kubeconfig has it
    cert_path: str | None = None
    cert_data: str | None = None
    key_path: str | None = None
    key_data: str | None = None
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
        return cls(
            server=info.server,
            token=info.token,
            ca_path=_str(info.ca_path),
            ca_data=_text(info.ca_data),
            cert_path=_str(info.certificate_path),
            cert_data=_text(info.certificate_data),
            key_path=_str(info.private_key_path),
            key_data=_text(info.private_key_data),
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
            certificate_data=self.cert_data,
            private_key_path=self.key_path,
            private_key_data=self.key_data,
            insecure=self.insecure or None,
            default_namespace=self.default_namespace,
        )

    def bearer(self) -> str | None:
        if self.token_path is not None and time.monotonic() - self._token_read_at > 60:
            self.token = self.token_path.read_text().strip()
            self._token_read_at = time.monotonic()
        return self.token

    def configuration(self, pool: int = 64) -> k8s.Configuration:
        """The kubernetes_asyncio configuration: server, bearer token (re-read before each
        request when it is a rotating file), CA and client certificate."""
        config = k8s.Configuration(host=self.server.rstrip("/"))
        config.connection_pool_maxsize = pool
        config.verify_ssl = not self.insecure
        config.ssl_ca_cert = self.ca_path or _pem_file(self.ca_data)
        config.cert_file = self.cert_path or _pem_file(self.cert_data)
        config.key_file = self.key_path or _pem_file(self.key_data)
        config.api_key_prefix = {"BearerToken": "Bearer"}

        def refresh(config: k8s.Configuration) -> None:
            token = self.bearer()
            config.api_key = {"BearerToken": token} if token else {}

        refresh(config)
        config.refresh_api_key_hook = refresh
        return config


def _str(value: Any) -> str | None:
    return os.fsdecode(value) if value is not None else None


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _pem_file(data: str | None) -> str | None:
    """A private file holding `data` as PEM (the ssl module loads certificates from files)."""
    if not data:
        return None
    pem = data if data.lstrip().startswith("-----BEGIN ") else base64.b64decode(data).decode()
    handle, path = tempfile.mkstemp(prefix="aiml024-kube-", suffix=".pem")
    with os.fdopen(handle, "w") as out:
        out.write(pem)
    return path


class Kube:
    """CRUD over the API with typed errors; one kubernetes_asyncio ApiClient per operator run."""

    def __init__(self, connection: Connection, timeout: float = 30):
        self.connection = connection
        self.timeout = timeout
        self._client: k8s.ApiClient | None = None
        self._custom_api: k8s.CustomObjectsApi | None = None

    def _api(self) -> k8s.ApiClient:
        # Made on first use, inside the event loop its aiohttp session belongs to.
        if self._client is None:
            self._client = k8s.ApiClient(self.connection.configuration())
            self._custom_api = k8s.CustomObjectsApi(self._client)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = self._custom_api = None

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            raise _error(error) from None

    def _custom(self) -> k8s.CustomObjectsApi:
        self._api()
        assert self._custom_api is not None
        return self._custom_api

    @staticmethod
    def _scoped(res: Res, namespace: str | None) -> bool:
        """Whether a call names the namespace (a namespaced type with one given)."""
        if not res.group:
            raise ValueError(f"{res.kind}: the operator reads core objects only through get()")
        return res.namespaced and bool(namespace)

    async def _custom_call(
        self, verb: str, res: Res, namespace: str | None, *rest: Any, sub: str = "", **options: Any
    ) -> Any:
        """CustomObjectsApi's `<verb>_namespaced_custom_object[_<sub>]`, or the `_cluster_` one
        when `res` is cluster-wide or no namespace is given; `rest` follows the plural."""
        custom = self._custom()
        suffix = f"_{sub}" if sub else ""
        if self._scoped(res, namespace):
            method = getattr(custom, f"{verb}_namespaced_custom_object{suffix}")
            head: tuple[Any, ...] = (res.group, res.version, namespace, res.plural)
        else:
            method = getattr(custom, f"{verb}_cluster_custom_object{suffix}")
            head = (res.group, res.version, res.plural)
        return await self._call(method, *head, *rest, **options)

    async def get(self, res: Res, namespace: str | None, name: str) -> Obj | None:
        try:
            if res is NAMESPACES:
                api = self._api()
                found = await self._call(k8s.CoreV1Api(api).read_namespace, name)
                namespace_obj: Obj = api.sanitize_for_serialization(found)
                return namespace_obj
            return await self._custom_call("get", res, namespace, name)  # type: ignore[no-any-return]
        except NotFound:
            return None

    async def list(self, res: Res, namespace: str | None = None, selector: str = "") -> Objs:
        options = {"label_selector": selector} if selector else {}
        answer = await self._custom_call("list", res, namespace, **options)
        items: Objs = answer.get("items") or []
        return items

    async def create(self, res: Res, manifest: Obj) -> Obj:
        namespace = manifest["metadata"].get("namespace")
        return await self._custom_call("create", res, namespace, manifest)  # type: ignore[no-any-return]

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
        self, user: str, groups: Sequence[str], verb: str, res: Res, namespace: str, name: str
    ) -> bool:
        """Whether the API server's authorizer lets `user` do `verb` (a SubjectAccessReview)."""
        review = k8s.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1",
            kind="SubjectAccessReview",
            spec=k8s.V1SubjectAccessReviewSpec(
                user=user,
                groups=[str(group) for group in groups],
                resource_attributes=k8s.V1ResourceAttributes(
                    group=res.group, resource=res.plural, verb=verb,
                    namespace=namespace, name=name,
                ),
            ),
        )  # fmt: skip
        api = k8s.AuthorizationV1Api(self._api())
        answer = await self._call(api.create_subject_access_review, review)
        return bool(answer.status is not None and answer.status.allowed)

    async def _patch(
        self, res: Res, namespace: str | None, name: str, body: Any, content_type: str, sub: str
    ) -> Obj:
        return await self._custom_call(  # type: ignore[no-any-return]
            "patch", res, namespace, name, body, sub=sub, _content_type=content_type
        )

    async def merge_patch(
        self, res: Res, namespace: str | None, name: str, patch: Obj, sub: str | None = None
    ) -> Obj:
        if sub not in (None, "status"):
            raise ValueError(f"no merge patch for the {sub} subresource")
        return await self._patch(
            res, namespace, name, patch, "application/merge-patch+json", sub or ""
        )

    async def json_patch(self, res: Res, namespace: str | None, name: str, ops: Objs) -> Obj:
        """A failed `test` op (the API answers 422) is a Conflict: read again, decide again."""
        try:
            return await self._patch(res, namespace, name, ops, "application/json-patch+json", "")
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
            await self._custom_call("delete", res, namespace, name)
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
