"""The emulated API server: aiohttp, one event loop in its own thread, everything in memory.

Faithful where the operator's correctness, or a security test, depends on it:
- discovery (/version, /api, /api/v1, /apis, /apis/<group>/<version>) with status subresources;
- resourceVersion from one global counter, uid, generation (bumped when anything but metadata
  and, with a status subresource, status changes), creationTimestamp, generateName;
- the status subresource: the main resource ignores status, /status ignores everything else;
- optimistic concurrency: 409 on a stale resourceVersion (PUT, or a merge patch that names one);
- JSON merge patch, JSON patch (a failed `test` op answers 422), strategic merge (as a merge
  patch: lists are replaced, not merged by key - the operator never relies on that);
- list with the current resourceVersion; watch resuming from any resourceVersion still in the
  event history, 410 Gone (as an ERROR event) for older ones; label selectors;
- deletion with finalizers (deletionTimestamp, removal when the last finalizer goes) and
  background garbage collection of dependents through ownerReferences;
- the write path in the API server's order: pruning of unknown fields (structural schemas:
  dropped, with a `Warning: 299 - "unknown field \\"spec.foo\\""` header; 400 under
  `?fieldValidation=Strict`), mutating admission webhooks, the status/spec reset of the
  subresource in use, validation (OpenAPI schema: type, enum, required, formats ... against
  crds/ and tests/upstream/; the CRDs' CEL `x-kubernetes-validations`, transition rules
  included, with ratcheting, see cel.py; total annotation size at most 256 KiB), validating
  admission webhooks, then storage; invalid objects are refused with 422 `Invalid`;
- admission webhooks from (Mutating|Validating)WebhookConfiguration manifests, called over HTTP
  with an AdmissionReview carrying the caller's userInfo (username and groups), `dryRun`, and
  `subResource` for writes to /status; rules match subresources like the API server (`models`
  does not match `models/status`; `models/status`, `*/status`, `models/*` and `*/*` do);
  `scope`, `objectSelector`, `namespaceSelector` and `matchConditions` are honoured;
- authentication by bearer token (the token is the user name, or `name|group1,group2`; see
  `add_user`), groups `system:authenticated`, `system:serviceaccounts[:<ns>]` for
  `system:serviceaccount:<ns>:<name>`, `system:masters` for `admin`; no token is
  `system:anonymous`;
- RBAC (rbac.py): Roles, ClusterRoles (with aggregation), RoleBindings and ClusterRoleBindings
  stored and served like other objects, loaded at start from Kubernetes' defaults
  (roles/kubernetes.yaml: cluster-admin, admin, edit, view, discovery), Argo Workflows' roles
  (roles/argo-workflows.yaml) and manifests/rbac.yaml + manifests/user-roles.yaml; 403 Forbidden
  with the API server's message; escalation prevention on role and binding writes;
  SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectAccessReview;
- ConfigMaps, Secrets (stringData folded into data), Pods and ServiceAccounts as plain objects;
- limits: a request body over 3 MiB is refused with 413 `RequestEntityTooLarge`;
- `?dryRun=All`: admission (webhooks told `dryRun: true`; one with side effects refuses) and
  validation run, the answer is what would be stored, nothing is stored or watched.

Not emulated: defaulting from schemas, field selectors, pagination, server-side apply,
bookmarks, impersonation, namespace deletion of contents, the 1.5 MiB etcd object limit,
CEL type checking and cost limits, ValidatingAdmissionPolicy.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import celpy
import jsonpatch
import yaml
from aiohttp import ClientSession, ClientTimeout, web
from celpy import celtypes
from multidict import CIMultiDict
from tests.schema_validation import SCHEMAS, crd_schema, load_crd, validate_against_crd

from . import cel
from .pruning import prune
from .rbac import RBAC_GROUP, Attributes, Authorizer, User

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
DEFAULT_CRDS = [
    *sorted((REPO / "crds").glob("*.yaml")),
    SCHEMAS / "argo-workflows" / "argoproj.io_workflows.yaml",
    SCHEMAS / "argo-workflows" / "argoproj.io_cronworkflows.yaml",
    SCHEMAS
    / "seldon-core-v1"
    / "apache-2.0_v1.17.1"
    / "machinelearning.seldon.io_seldondeployments.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_servicemonitors.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_prometheusrules.yaml",
]
# RBAC objects loaded at start, in this order.
DEFAULT_RBAC = [
    HERE / "roles" / "kubernetes.yaml",
    HERE / "roles" / "argo-workflows.yaml",
    REPO / "manifests" / "rbac.yaml",
    REPO / "manifests" / "user-roles.yaml",
]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
OPERATOR_USER = "system:serviceaccount:aiml024-system:aiml024-operator"
ARGO_USER = "system:serviceaccount:argo:argo"  # Argo's workflow controller (argo-binding)
ADMIN = "admin"  # in system:masters: RBAC does not apply
BODY_LIMIT = 3 * 1024 * 1024  # the API server's request body limit
ANNOTATIONS_LIMIT = 256 * 1024  # TotalAnnotationSizeLimitB
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")

Obj = dict[str, Any]


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    crd_path: Path | None = None
    schema: Obj | None = None  # openAPIV3Schema of the storage version (CRDs only)
    review: bool = False  # a create-only review (SubjectAccessReview ...): nothing is stored

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTIN_TYPES = [
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"]),
    ResourceType("", "v1", "events", "Event", True, "event", ["ev"]),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType("", "v1", "pods", "Pod", True, "pod", ["po"], ["all"], status_subresource=True),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ["sa"]),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "customresourcedefinition",
        ["crd"],
    ),
    ResourceType(RBAC_GROUP, "v1", "roles", "Role", True, "role"),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
    ResourceType(RBAC_GROUP, "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
    ResourceType(
        RBAC_GROUP, "v1", "clusterrolebindings", "ClusterRoleBinding", False, "clusterrolebinding"
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        review=True,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        review=True,
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        True,
        review=True,
    ),
]


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
            "details": self.details,
        }


@dataclass(eq=False)
class Watch:
    rt: ResourceType
    namespace: str | None
    selector: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[tuple[int, str, Obj] | None] = field(default_factory=asyncio.Queue)


@dataclass
class Write:
    """How one write request asks to be done."""

    user: User
    dry_run: bool = False
    field_validation: str = "Warn"  # Ignore, Warn, Strict
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """One write as admission sees it; the object itself travels apart (mutating hooks change it)."""

    rt: ResourceType
    operation: str  # CREATE, UPDATE, DELETE
    old: Obj | None
    sub: str | None
    write: Write


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """`a=b,c!=d,e,!f` -> [(key, op, value)]."""
    out: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            out.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            out.append((key.strip(), "=", value.strip()))
        elif part.startswith("!"):
            out.append((part[1:], "!", None))
        else:
            out.append((part, "exists", None))
    return out


def selected(obj: Obj, selector: list[tuple[str, str, str | None]]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for key, op, value in selector:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def label_selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions); empty or None matches all."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _essence(obj: Obj, rt: ResourceType) -> Obj:
    """What bumps metadata.generation when it changes."""
    drop = {"metadata", "status"} if rt.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in drop}


_ALLOWED_META = (
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)
_SYSTEM_META = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def _rules_hold(rules: Any) -> bool:
    return isinstance(rules, list) and all(isinstance(r, dict) for r in rules)


class Emulator:
    """`with Emulator() as api:` serves on http://127.0.0.1:<port> until the block ends.

    Users: the bearer token is the user name. `api.add_user("bob", groups=["risk-officer"])`
    gives a name groups (every token also gets `system:authenticated`); a token
    `bob|risk-officer,sre` names its groups itself (`Client(url, "bob", groups=[...])`).
    `admin` is in `system:masters` (RBAC does not apply to it).

    Permissions: `api.bind(namespace, "edit", user="alice")` creates a RoleBinding (a
    ClusterRoleBinding with namespace None); any RBAC object can also be created through the API
    as admin. `rbac=False` turns authorization off (every authenticated request is allowed).
    """

    def __init__(
        self,
        crd_files: list[Path] | None = None,
        history: int = 100_000,
        validate: bool = True,
        namespaces: tuple[str, ...] = ("default",),
        rbac: bool = True,
        rbac_files: list[Path] | None = None,
    ):
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.crds: list[Obj] = []
        self.validate = validate
        self.rbac_enabled = rbac
        for rt in BUILTIN_TYPES:
            self.types[rt.key] = copy.copy(rt)
        for path in crd_files if crd_files is not None else DEFAULT_CRDS:
            self._load_crd(Path(path))
        self.store: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {k: {} for k in self.types}
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.rv = 0
        self.history: deque[tuple[int, tuple[str, str], str, Obj]] = deque(maxlen=history)
        self.watches: set[Watch] = set()
        self.webhooks: list[Obj] = []
        self.users: dict[str, tuple[str, ...]] = {ADMIN: ("system:masters",)}
        self.audit: set[tuple[str, str, str, str]] = set()  # (user, verb, group, resource[/sub])
        # Refused for want of permission: (user, verb, group, resource[/sub], namespace, name).
        self.denied: list[tuple[str, str, str, str, str, str]] = []
        self.request_seconds: list[tuple[str, float]] = []  # (verb, seconds) for benchmarks
        self.authorizer = Authorizer(self._rbac_objects)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""
        for ns in namespaces:
            self._put_direct(self.types[("", "namespaces")], {"metadata": {"name": ns}})
        for crd in self.crds:
            self._put_direct(self.types[("apiextensions.k8s.io", "customresourcedefinitions")], crd)
        for path in rbac_files if rbac_files is not None else DEFAULT_RBAC:
            self.load_rbac(Path(path))

    # -- setup --------------------------------------------------------------------------------

    def _load_crd(self, path: Path) -> None:
        crd = load_crd(path)  # parsed once per process; shared, not to be mutated
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v.get("storage"))
        names = spec["names"]
        rt = ResourceType(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular", ""),
            short_names=names.get("shortNames", []),
            categories=names.get("categories", []),
            status_subresource="status" in (version.get("subresources") or {}),
            crd_path=path,
            schema=crd_schema(crd, version["name"]),
        )
        self.types[rt.key] = rt
        # Served to kopf's CRD watch without the (multi-megabyte) schemas.
        slim = copy.deepcopy({k: v for k, v in crd.items() if k != "spec"})
        slim["spec"] = copy.deepcopy({k: v for k, v in spec.items() if k != "versions"})
        slim["spec"]["versions"] = [
            copy.deepcopy({k: v for k, v in ver.items() if k != "schema"})
            for ver in spec["versions"]
        ]
        self.crds.append(slim)

    def load_rbac(self, path: Path) -> None:
        """Store the Role/ClusterRole/RoleBinding/ClusterRoleBinding documents of a manifest
        (other kinds are skipped; a namespaced one without a namespace goes to `default`)."""
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in RBAC_KINDS:
                self.put(doc)

    def add_webhook_configuration(self, manifest: Obj, url_for: Callable[[Obj], str]) -> None:
        """Register the webhooks of a (Mutating|Validating)WebhookConfiguration; `url_for`
        maps each webhook's clientConfig (service + path) to a URL this process can reach."""
        kind = "mutating" if manifest["kind"].startswith("Mutating") else "validating"
        for hook in manifest.get("webhooks", []):
            self.webhooks.append({**hook, "type": kind, "url": url_for(hook["clientConfig"])})

    def add_user(self, name: str, groups: list[str] | tuple[str, ...] = ()) -> None:
        """Give the user whose token is `name` these groups (besides system:authenticated)."""
        self.users[name] = tuple(groups)

    def put(self, manifest: Obj) -> Obj:
        """Store an object as the cluster's installer would (no admission, no RBAC, no
        validation); replaces one of the same name. Safe before and after `start()`."""

        def store() -> Obj:
            group, _, version = str(manifest["apiVersion"]).rpartition("/")
            rt = next(
                (t for t in self.types.values() if t.group == group and t.kind == manifest["kind"]),
                None,
            )
            if rt is None:
                raise KeyError(f"no resource type for {manifest['apiVersion']} {manifest['kind']}")
            obj = copy.deepcopy(manifest)
            meta = obj.setdefault("metadata", {})
            if rt.namespaced:
                meta.setdefault("namespace", "default")
            else:
                meta.pop("namespace", None)
            self._stamp_new(rt, obj)
            self.store[rt.key][(meta.get("namespace", ""), meta["name"])] = obj
            if self._loop is not None:
                self._emit(rt, "ADDED", obj)
            if rt.group == RBAC_GROUP:
                self.authorizer.invalidate()
            return copy.deepcopy(obj)

        return self.call(store) if self._loop is not None else store()

    def bind(
        self,
        namespace: str | None,
        role: str,
        *,
        user: str | None = None,
        group: str | None = None,
        service_account: str | None = None,
        role_kind: str = "ClusterRole",
        name: str | None = None,
    ) -> Obj:
        """A RoleBinding in `namespace` (a ClusterRoleBinding when None) of `role` to one
        subject: a user, a group, or a service account as `<namespace>:<name>`."""
        if service_account is not None:
            sa_ns, _, sa_name = service_account.partition(":")
            subject = {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}
            who = f"sa-{sa_ns}-{sa_name}"
        elif group is not None:
            subject = {"kind": "Group", "name": group, "apiGroup": RBAC_GROUP}
            who = f"group-{group}"
        else:
            subject = {"kind": "User", "name": str(user), "apiGroup": RBAC_GROUP}
            who = str(user)
        binding = {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
            "metadata": {"name": name or f"{who}-{role}".replace(":", "-")},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
            "subjects": [subject],
        }
        if namespace:
            binding["metadata"]["namespace"] = namespace
        return self.put(binding)

    def _rbac_objects(self) -> dict[str, dict[tuple[str, str], Obj]]:
        return {
            "Role": self.store[(RBAC_GROUP, "roles")],
            "ClusterRole": self.store[(RBAC_GROUP, "clusterroles")],
            "RoleBinding": self.store[(RBAC_GROUP, "rolebindings")],
            "ClusterRoleBinding": self.store[(RBAC_GROUP, "clusterrolebindings")],
        }

    def _put_direct(self, rt: ResourceType, obj: Obj) -> None:
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        self._stamp_new(rt, obj)
        self.store[rt.key][(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=0.1
            )
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            self._loop = loop
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="k8s-emulator", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    async def _shutdown(self) -> None:
        for watch in list(self.watches):
            watch.queue.put_nowait(None)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (for tests that read the store directly)."""
        assert self._loop is not None
        if threading.current_thread() is self._thread:
            return fn()
        done = asyncio.run_coroutine_threadsafe(_acall(fn), self._loop)
        return done.result(10)

    # -- authentication and authorization ------------------------------------------------------

    def authenticate(self, token: str) -> User:
        """The user a bearer token stands for."""
        if not token:
            return User("system:anonymous", ("system:unauthenticated",))
        name, sep, listed = token.partition("|")
        groups = list(self.users.get(name, ()))
        if sep:
            groups += [g for g in listed.split(",") if g]
        if name.startswith("system:serviceaccount:"):
            namespace = name.split(":")[2]
            groups += ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        groups.append("system:authenticated")
        return User(name, tuple(dict.fromkeys(groups)))

    def _authorize(self, user: User, attrs: Attributes) -> None:
        if not self.rbac_enabled or self.authorizer.allowed(user, attrs):
            return
        self.denied.append(
            (user.name, attrs.verb, attrs.group, attrs.combined, attrs.namespace, attrs.name)
        )
        reason = attrs.forbidden_message(user.name)
        if not attrs.resource_request:
            raise ApiFailure(403, "Forbidden", f"forbidden: {reason}")
        qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
        named = f' "{attrs.name}"' if attrs.name else ""
        raise ApiFailure(
            403,
            "Forbidden",
            f"{qualified}{named} is forbidden: {reason}",
            {"name": attrs.name, "group": attrs.group, "kind": attrs.resource},
        )

    @staticmethod
    def request_attributes(method: str, path: str, query: Any) -> Attributes:
        """kube's RequestInfo for a request: what the authorizer is asked about."""
        parts = [p for p in path.split("/") if p]
        get_verb = method.lower() if method not in ("GET", "HEAD") else "get"
        if (
            len(parts) < 3
            or parts[0] not in ("api", "apis")
            or (parts[0] == "apis" and len(parts) < 4)
        ):
            return Attributes(verb=get_verb, path=path, resource_request=False)
        if parts[0] == "api":
            group, rest = "", parts[2:]
        else:
            group, rest = parts[1], parts[3:]
        namespace = ""
        if rest[0] == "namespaces" and len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in ("status", "finalize"):
                rest = rest[2:]
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if method in ("GET", "HEAD"):
            verb = "get" if name else "list"
            if query.get("watch") in ("true", "1"):
                verb = "watch"
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = method.lower()
        return Attributes(verb, group, resource, sub, namespace, name)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user = self.authenticate(token)
        try:
            attrs = self.request_attributes(request.method, request.path, request.query)
            if attrs.resource_request:
                self.audit.add((user.name, attrs.verb, attrs.group, attrs.combined))
            self._authorize(user, attrs)
            response = await self._route(request, user, attrs)
        except ApiFailure as failure:
            response = web.json_response(failure.status(), status=failure.code)
        self.request_seconds.append((request.method, time.perf_counter() - started))
        return response

    async def _body(self, request: web.Request) -> Any:
        if (request.content_length or 0) > BODY_LIMIT:
            raise _too_large()
        raw = await request.read()
        if len(raw) > BODY_LIMIT:
            raise _too_large()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ApiFailure(400, "BadRequest", f"the body is not JSON: {error}") from None

    @staticmethod
    def _write_options(request: web.Request, user: User) -> Write:
        dry = request.query.getall("dryRun", [])
        for value in dry:
            if value != "All":
                raise ApiFailure(
                    400,
                    "BadRequest",
                    f'dryRun: Unsupported value: "{value}": supported values: "All"',
                )
        validation = request.query.get("fieldValidation") or "Warn"
        if validation not in ("Ignore", "Warn", "Strict"):
            raise ApiFailure(
                400,
                "BadRequest",
                f'fieldValidation: Unsupported value: "{validation}": supported values: '
                '"Ignore", "Strict", "Warn"',
            )
        return Write(user, dry_run=bool(dry), field_validation=validation)

    @staticmethod
    def _answer(body: Obj, write: Write, status: int = 200) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict()
        for warning in dict.fromkeys(write.warnings):
            headers.add("Warning", f'299 - "{_quote(warning)}"')
        return web.json_response(body, status=status, headers=headers)

    async def _route(
        self, request: web.Request, user: User, attrs: Attributes
    ) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path == "/version":
            return web.json_response(
                {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulated"}
            )
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            return web.json_response(self._groups())
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiFailure(404, "NotFound", f"the server could not find {request.path}")
        if not rest:
            return web.json_response(self._resources(group, version))
        rt, namespace, name, sub = self._resolve(group, version, rest)
        verb = attrs.verb
        if rt.review:
            if verb != "create":
                raise ApiFailure(405, "MethodNotAllowed", f"{rt.plural} can only be created")
            return web.json_response(
                self._review(rt, namespace, await self._body(request), user), status=201
            )
        if verb == "watch":
            return await self._watch(request, rt, namespace)
        if verb == "list":
            return web.json_response(self._list(rt, namespace, request.query.get("labelSelector")))
        if verb == "get":
            return web.json_response(self._get(rt, namespace, name))
        if verb == "create":
            if name is not None:
                raise ApiFailure(405, "MethodNotAllowed", "create takes the collection's path")
            write = self._write_options(request, user)
            body = await self._body(request)
            created = await self._create(rt, namespace, body, write)
            return self._answer(created, write, 201)
        if verb in ("update", "patch"):
            assert name is not None
            write = self._write_options(request, user)
            body = await self._body(request)
            ctype = request.headers.get("Content-Type", "").split(";")[0]
            updated = await self._update(rt, namespace, name, sub, body, ctype, verb, write)
            return self._answer(updated, write)
        if verb == "delete":
            assert name is not None
            write = self._write_options(request, user)
            body = await self._body(request) if request.can_read_body else {}
            policy = request.query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            deleted = await self._delete_request(rt, namespace, name, policy != "Orphan", write)
            return self._answer(deleted, write)
        raise ApiFailure(405, "MethodNotAllowed", f"{request.method} is not supported")

    def _groups(self) -> Obj:
        groups: dict[str, str] = {}
        for rt in self.types.values():
            if rt.group:
                groups[rt.group] = rt.version
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for g, v in sorted(groups.items())
            ],
        }

    def _resources(self, group: str, version: str) -> Obj:
        found = [rt for rt in self.types.values() if rt.group == group and rt.version == version]
        if not found:
            raise ApiFailure(404, "NotFound", f"no API group version {group}/{version}")
        resources: list[Obj] = []
        for rt in found:
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["create"] if rt.review else VERBS,
                    "shortNames": rt.short_names,
                    "categories": rt.categories,
                }
            )
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _type(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self.types.get((group, plural))
        return rt if rt is not None and rt.version == version else None

    def _resolve(
        self, group: str, version: str, rest: list[str]
    ) -> tuple[ResourceType, str | None, str | None, str | None]:
        """(type, namespace, name, subresource) of a resource path below /api(s)/<gv>/."""
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self._type(group, version, rest[2])
            if rt is not None and rt.namespaced:
                return rt, rest[1], _at(rest, 3), _at(rest, 4)
        rt = self._type(group, version, rest[0])
        if rt is None:
            raise ApiFailure(404, "NotFound", f"the server could not find the resource {rest[0]}")
        return rt, None, _at(rest, 1), _at(rest, 2)

    # -- reviews ------------------------------------------------------------------------------

    def _review(self, rt: ResourceType, namespace: str | None, body: Obj, user: User) -> Obj:
        """SubjectAccessReview (any user, as asked), SelfSubjectAccessReview (the caller),
        LocalSubjectAccessReview (any user, in the request's namespace)."""
        spec = body.get("spec") or {}
        if rt.kind == "SelfSubjectAccessReview":
            subject = user
        else:
            if not spec.get("user") and not spec.get("groups"):
                raise ApiFailure(
                    422,
                    "Invalid",
                    f'{rt.kind}.authorization.k8s.io "" is invalid: spec.user: Invalid value: '
                    '"": at least one of user or group must be specified',
                )
            subject = User(str(spec.get("user") or ""), tuple(spec.get("groups") or ()))
        res = spec.get("resourceAttributes")
        nonres = spec.get("nonResourceAttributes")
        if res:
            ns = str(res.get("namespace") or "")
            if rt.kind == "LocalSubjectAccessReview":
                if ns and ns != namespace:
                    raise ApiFailure(
                        400,
                        "BadRequest",
                        "spec.resourceAttributes.namespace must match the request's namespace",
                    )
                ns = namespace or ""
            attrs = Attributes(
                verb=str(res.get("verb") or ""),
                group=str(res.get("group") or ""),
                resource=str(res.get("resource") or ""),
                subresource=str(res.get("subresource") or ""),
                namespace=ns,
                name=str(res.get("name") or ""),
            )
        elif nonres:
            attrs = Attributes(
                verb=str(nonres.get("verb") or ""),
                path=str(nonres.get("path") or ""),
                resource_request=False,
            )
        else:
            raise ApiFailure(
                422,
                "Invalid",
                f'{rt.kind}.authorization.k8s.io "" is invalid: spec: Invalid value: '
                '"null": exactly one of nonResourceAttributes or resourceAttributes must be '
                "specified",
            )
        allowed, reason = self.authorizer.authorize(subject, attrs)
        status: Obj = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        meta: Obj = {"creationTimestamp": None}
        if rt.namespaced and namespace:
            meta["namespace"] = namespace
        return {
            "apiVersion": rt.api_version,
            "kind": rt.kind,
            "metadata": meta,
            "spec": spec,
            "status": status,
        }

    # -- reads --------------------------------------------------------------------------------

    def _get(self, rt: ResourceType, namespace: str | None, name: str | None) -> Obj:
        obj = self.store[rt.key].get((namespace or "", name or ""))
        if obj is None:
            raise ApiFailure(
                404,
                "NotFound",
                f'{rt.qualified()} "{name}" not found',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        return copy.deepcopy(obj)

    def _list(self, rt: ResourceType, namespace: str | None, selector: str | None) -> Obj:
        parsed = parse_selector(selector)
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self.store[rt.key].items())
            if (namespace is None or ns == namespace) and selected(obj, parsed)
        ]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        watch = Watch(rt, namespace, parse_selector(request.query.get("labelSelector")))
        since = request.query.get("resourceVersion") or "0"
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        self.watches.add(watch)  # subscribe before the snapshot: nothing falls in between
        backlog: list[tuple[int, str, Obj]] = []
        if since == "0":
            backlog = [
                (self.rv, "ADDED", o)
                for (ns, _), o in sorted(self.store[rt.key].items())
                if namespace is None or ns == namespace
            ]
        else:
            start = int(since)
            oldest = self.history[0][0] if self.history else self.rv + 1
            if start < oldest - 1 and start < self.rv and len(self.history) == self.history.maxlen:
                backlog = [
                    (
                        0,
                        "ERROR",
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "reason": "Expired",
                            "code": 410,
                            "message": f"too old resource version: {start}",
                        },
                    )
                ]
            else:
                backlog = [
                    (rv, t, o) for rv, key, t, o in self.history if key == rt.key and rv > start
                ]
        last = max((rv for rv, _, _ in backlog), default=int(since) if since != "0" else self.rv)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = time.monotonic() + timeout
        try:
            for _rv, type_, obj in backlog:
                if type_ == "ERROR" or self._matches(watch, obj):
                    await response.write(_line(type_, obj))
                if type_ == "ERROR":
                    return response
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watch.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None:
                    break
                rv, type_, obj = item
                if rv > last:
                    await response.write(_line(type_, obj))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.discard(watch)
        return response

    def _matches(self, watch: Watch, obj: Obj) -> bool:
        ns = obj["metadata"].get("namespace", "")
        return (watch.namespace is None or ns == watch.namespace) and selected(obj, watch.selector)

    # -- writes -------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _stamp_new(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = _now()
        if rt.group not in ("",):
            meta["generation"] = 1
        self.uids[meta["uid"]] = (rt.key, meta.get("namespace", ""), meta["name"])

    def _emit(self, rt: ResourceType, type_: str, obj: Obj) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self.history.append((rv, rt.key, type_, snapshot))
        for watch in list(self.watches):
            if watch.rt.key == rt.key and self._matches(watch, snapshot):
                watch.queue.put_nowait((rv, type_, snapshot))
        if rt.group == RBAC_GROUP:
            self.authorizer.invalidate()

    def _prune(self, rt: ResourceType, obj: Obj, write: Write | None) -> None:
        """Drop unknown fields (CRD types); warn, or refuse under fieldValidation=Strict."""
        if rt.schema is None:
            return
        dropped = prune(rt.schema, obj)
        if not dropped or write is None or write.field_validation == "Ignore":
            return
        if write.field_validation == "Strict":
            raise ApiFailure(
                400,
                "BadRequest",
                "strict decoding error: " + ", ".join(f'unknown field "{d}"' for d in dropped),
            )
        write.warnings += [f'unknown field "{d}"' for d in dropped]

    def _check_valid(self, rt: ResourceType, obj: Obj, old: Obj | None = None) -> None:
        problems: list[str] = []
        causes: list[Obj] = []
        annotations = obj["metadata"].get("annotations") or {}
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > ANNOTATIONS_LIMIT:
            problems.append(
                f"metadata.annotations: Too long: must have at most {ANNOTATIONS_LIMIT} bytes"
            )
        if rt.group == RBAC_GROUP:
            problems += _rbac_problems(rt, obj, old)
        if self.validate and rt.crd_path is not None and rt.schema is not None:
            view = dict(obj)
            # ownerReferences are checked here: tests/schema_validation.py's ObjectMeta schema
            # passes through its strict conversion, which refuses every field of an owner ref.
            view["metadata"] = {
                k: v
                for k, v in obj["metadata"].items()
                if k in _ALLOWED_META and k != "ownerReferences"
            }
            problems += validate_against_crd(view, rt.crd_path)
            for i, ref in enumerate(obj["metadata"].get("ownerReferences") or []):
                missing = [k for k in ("apiVersion", "kind", "name", "uid") if not ref.get(k)]
                if missing:
                    problems.append(f"metadata.ownerReferences[{i}]: missing {', '.join(missing)}")
            if not problems and cel.has_rules(rt.schema):
                # The API server skips CEL when the schema check failed (a blocking error).
                broken = cel.validate(rt.schema, obj, old if old is not None else cel.MISSING)
                problems += [str(v) for v in broken]
                causes += [v.cause() for v in broken]
        if problems:
            name = obj["metadata"].get("name")
            text = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
            qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
            raise ApiFailure(
                422,
                "Invalid",
                f'{qualified} "{name}" is invalid: {text}',
                {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.kind,
                    "causes": causes or [{"message": p} for p in problems],
                },
            )

    def _check_escalation(self, rt: ResourceType, obj: Obj, user: User) -> None:
        """Roles only with rules one holds; bindings only of roles one holds (or with the
        `escalate` / `bind` verb)."""
        if rt.group != RBAC_GROUP or not self.rbac_enabled or user.superuser:
            return
        namespace = obj["metadata"].get("namespace", "") if rt.namespaced else ""
        name = obj["metadata"].get("name", "")
        if rt.kind in ("Role", "ClusterRole"):
            verb, rules = "escalate", obj.get("rules") or []
            if rt.kind == "ClusterRole" and obj.get("aggregationRule"):
                # It can gather anything: the API server asks for * on *.* (cluster-admin).
                rules = [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]},
                ]
            target, target_kind = name, rt.plural
        else:
            ref = obj.get("roleRef") or {}
            verb = "bind"
            target = str(ref.get("name", ""))
            target_kind = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            if ref.get("kind") == "ClusterRole":
                rules = self.authorizer.cluster_role_rules(target) or []
            else:
                role = self.store[(RBAC_GROUP, "roles")].get((namespace, target)) or {}
                rules = role.get("rules") or []
        special = Attributes(verb, RBAC_GROUP, target_kind, "", namespace, target)
        if self.authorizer.allowed(user, special):
            return
        missing = self.authorizer.covers(user, namespace, rules)
        if missing:
            what = "create" if rt.kind in ("Role", "ClusterRole") else "bind"
            raise ApiFailure(
                403,
                "Forbidden",
                f'{rt.plural}.{RBAC_GROUP} "{name}" is forbidden: user "{user.name}" (groups='
                f"{json.dumps(list(user.groups))}) is attempting to grant RBAC permissions not "
                f"currently held: {json.dumps(missing)} ({what} refused)",
                {"name": name, "group": RBAC_GROUP, "kind": rt.plural},
            )

    def _prepare(self, rt: ResourceType, obj: Obj) -> None:
        """What the type's strategy does to any object it stores."""
        if rt.kind == "Secret" and isinstance(obj.get("stringData"), dict):
            data = dict(obj.get("data") or {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data

    async def _create(
        self, rt: ResourceType, namespace: str | None, body: Obj, write: Write
    ) -> Obj:
        if not isinstance(body, dict):
            raise ApiFailure(400, "BadRequest", "the body must be an object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if namespace is None:
                raise ApiFailure(405, "MethodNotAllowed", "create needs a namespaced path")
            if meta.get("namespace", namespace) != namespace:
                raise ApiFailure(400, "BadRequest", "the namespace of the object does not match")
            meta["namespace"] = namespace
            if ("", namespace) not in self.store[("", "namespaces")]:
                raise ApiFailure(404, "NotFound", f'namespaces "{namespace}" not found')
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiFailure(422, "Invalid", "metadata.name: Required value")
        obj.setdefault("apiVersion", rt.api_version)  # the server fills them from the URL
        obj.setdefault("kind", rt.kind)
        if obj.get("apiVersion") != rt.api_version or obj.get("kind") != rt.kind:
            raise ApiFailure(400, "BadRequest", f"expected {rt.api_version} {rt.kind}")
        for key in _SYSTEM_META:
            meta.pop(key, None)
        self._prune(rt, obj, write)
        obj = await self._admit(Attempt(rt, "CREATE", None, None, write), obj, "mutating")
        self._prune(rt, obj, None)
        if rt.status_subresource:
            obj.pop("status", None)
        for key in _SYSTEM_META:
            obj["metadata"].pop(key, None)
        self._prepare(rt, obj)
        self._check_valid(rt, obj)
        self._check_escalation(rt, obj, write.user)
        obj = await self._admit(Attempt(rt, "CREATE", None, None, write), obj, "validating")
        key = (namespace or "", obj["metadata"]["name"])
        if key in self.store[rt.key]:
            raise ApiFailure(
                409,
                "AlreadyExists",
                f'{rt.qualified()} "{key[1]}" already exists',
                {"name": key[1], "group": rt.group, "kind": rt.plural},
            )
        if write.dry_run:
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if rt.group:
                meta["generation"] = 1
            return obj
        self._stamp_new(rt, obj)
        self.store[rt.key][key] = obj
        self._emit(rt, "ADDED", obj)
        self._collect_orphan(obj)
        return copy.deepcopy(obj)

    async def _update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        sub: str | None,
        body: Any,
        ctype: str,
        verb: str,
        write: Write,
    ) -> Obj:
        if sub not in (None, "status") or (sub == "status" and not rt.status_subresource):
            raise ApiFailure(404, "NotFound", f"{rt.plural} has no subresource {sub}")
        for _attempt in range(10):  # like the server's GuaranteedUpdate: retry on a race
            write.warnings.clear()
            old = self._get(rt, namespace, name)
            new = self._apply_change(rt, old, body, ctype, verb)
            if not isinstance(new, dict):
                raise ApiFailure(400, "BadRequest", "the result is not an object")
            new.setdefault("metadata", {})
            if (
                new.get("apiVersion", rt.api_version) != rt.api_version
                or new.get("kind", rt.kind) != rt.kind
            ):
                raise ApiFailure(400, "BadRequest", f"expected {rt.api_version} {rt.kind}")
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            self._keep_system_meta(old, new)
            self._prune(rt, new, write)
            new = await self._admit(Attempt(rt, "UPDATE", old, sub, write), new, "mutating")
            self._prune(rt, new, None)
            new = self._reset_for_subresource(rt, old, new, sub)
            self._keep_system_meta(old, new)
            self._prepare(rt, new)
            self._check_valid(rt, new, old)
            if rt.group == RBAC_GROUP and new != old:
                self._check_escalation(rt, new, write.user)
            new = await self._admit(Attempt(rt, "UPDATE", old, sub, write), new, "validating")
            current = self.store[rt.key].get((namespace or "", name))
            if current is None:
                raise ApiFailure(404, "NotFound", f'{rt.qualified()} "{name}" not found')
            if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                continue  # changed while the webhooks ran: recompute against the fresh object
            if new == old:
                return new  # a no-op write does not bump resourceVersion
            if "generation" in old["metadata"] and _essence(new, rt) != _essence(old, rt):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if write.dry_run:
                return new
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.store[rt.key][(namespace or "", name)] = new
            self._emit(rt, "MODIFIED", new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                self._remove(rt, new, cascade=True)
            return copy.deepcopy(new)
        raise ApiFailure(409, "Conflict", "the object keeps changing; try again")

    @staticmethod
    def _keep_system_meta(old: Obj, new: Obj) -> None:
        meta = new.setdefault("metadata", {})
        for key in (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
        ):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]

    @staticmethod
    def _reset_for_subresource(rt: ResourceType, old: Obj, new: Obj, sub: str | None) -> Obj:
        """The status strategy keeps all but status (and metadata) from the old object; the main
        resource's strategy keeps the old status."""
        if sub == "status":
            kept = copy.deepcopy(old)
            kept.pop("status", None)
            if "status" in new:
                kept["status"] = new["status"]
            return kept  # metadata too: a custom resource's /status changes status only
        if rt.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = old["status"]
        return new

    def _apply_change(self, rt: ResourceType, old: Obj, body: Any, ctype: str, verb: str) -> Obj:
        current_rv = old["metadata"]["resourceVersion"]
        conflict = ApiFailure(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified()} "{old["metadata"]["name"]}": '
            "the object has been modified; please apply your changes to the latest version and "
            "try again",
        )
        if verb == "update":
            if not isinstance(body, dict):
                raise ApiFailure(400, "BadRequest", "the body must be an object")
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current_rv:
                raise conflict
            return copy.deepcopy(body)
        if ctype == "application/json-patch+json":
            try:
                return jsonpatch.apply_patch(old, body)  # type: ignore[no-any-return]
            except jsonpatch.JsonPatchTestFailed as error:
                raise ApiFailure(422, "Invalid", f"the patch test failed: {error}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise ApiFailure(422, "Invalid", f"the patch cannot be applied: {error}") from None
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            wanted = (((body or {}).get("metadata") or {}) if isinstance(body, dict) else {}).get(
                "resourceVersion"
            )
            if wanted and wanted != current_rv:
                raise conflict
            return merge_patch(old, body)  # type: ignore[no-any-return]
        raise ApiFailure(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

    async def _delete_request(
        self, rt: ResourceType, namespace: str | None, name: str, cascade: bool, write: Write
    ) -> Obj:
        old = self._get(rt, namespace, name)
        for kind in ("mutating", "validating"):
            await self._admit(Attempt(rt, "DELETE", old, None, write), None, kind)
        if write.dry_run:
            if old["metadata"].get("finalizers") and not old["metadata"].get("deletionTimestamp"):
                old["metadata"]["deletionTimestamp"] = _now()
                old["metadata"]["deletionGracePeriodSeconds"] = 0
            return old
        return self._delete(rt, namespace, name, cascade)

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, cascade: bool) -> Obj:
        obj = self._get(rt, namespace, name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self.store[rt.key][(namespace or "", name)] = obj
                self._emit(rt, "MODIFIED", obj)
            return copy.deepcopy(obj)
        self._remove(rt, obj, cascade)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "details": {"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
        }

    def _remove(self, rt: ResourceType, obj: Obj, cascade: bool) -> None:
        meta = obj["metadata"]
        self.store[rt.key].pop((meta.get("namespace", ""), meta["name"]), None)
        self.uids.pop(meta["uid"], None)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(rt, "DELETED", gone)
        if cascade:
            # Background propagation, as the garbage collector does it: after the owner is gone.
            asyncio.get_running_loop().call_later(0.05, self._collect, meta["uid"])

    def _collect(self, owner_uid: str) -> None:
        for key, objects in self.store.items():
            rt = self.types[key]
            for obj in list(objects.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    alive = [
                        r for r in refs if r.get("uid") != owner_uid and r.get("uid") in self.uids
                    ]
                    if not alive:
                        meta = obj["metadata"]
                        try:
                            self._delete(rt, meta.get("namespace"), meta["name"], cascade=True)
                        except ApiFailure:
                            pass

    def _collect_orphan(self, obj: Obj) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not any(r.get("uid") in self.uids for r in refs):
            asyncio.get_running_loop().call_later(0.05, self._collect, refs[0].get("uid"))

    # -- admission ----------------------------------------------------------------------------

    async def _admit(self, attempt: Attempt, obj: Obj | None, kind: str) -> Obj:
        for hook in self.webhooks:
            if hook["type"] == kind and self._hook_matches(hook, attempt, obj):
                if attempt.write.dry_run and hook.get("sideEffects") not in (
                    "None",
                    "NoneOnDryRun",
                ):
                    raise ApiFailure(
                        400,
                        "BadRequest",
                        f'admission webhook "{hook["name"]}" does not support dry run',
                    )
                if not self._conditions_hold(hook, attempt, obj):
                    continue
                obj = await self._call_webhook(hook, attempt, obj)
        return obj  # type: ignore[return-value]

    def _hook_matches(self, hook: Obj, attempt: Attempt, obj: Obj | None) -> bool:
        rt, old = attempt.rt, attempt.old
        if not any(
            _rule_matches(rule, rt, attempt.operation, attempt.sub)
            for rule in hook.get("rules", [])
        ):
            return False
        target = obj if obj is not None else old
        assert target is not None
        labels = target["metadata"].get("labels") or {}
        old_labels = (old or {}).get("metadata", {}).get("labels") or {}
        selector = hook.get("objectSelector")
        if selector and not (
            label_selector_matches(selector, labels)
            or (old is not None and label_selector_matches(selector, old_labels))
        ):
            return False
        ns_selector = hook.get("namespaceSelector")
        if ns_selector and rt.namespaced:
            namespace = self.store[("", "namespaces")].get(
                ("", target["metadata"].get("namespace", ""))
            )
            ns_labels = dict((namespace or {}).get("metadata", {}).get("labels") or {})
            ns_labels.setdefault(
                "kubernetes.io/metadata.name", target["metadata"].get("namespace", "")
            )
            if not label_selector_matches(ns_selector, ns_labels):
                return False
        return True

    def _conditions_hold(self, hook: Obj, attempt: Attempt, obj: Obj | None) -> bool:
        conditions = hook.get("matchConditions") or []
        if not conditions:
            return True
        variables = {
            "object": celpy.json_to_cel(obj),
            "oldObject": celpy.json_to_cel(attempt.old),
            "request": celpy.json_to_cel(self._review_request(attempt, obj)),
        }
        for condition in conditions:
            result = cel.evaluate(str(condition.get("expression", "")), **variables)
            if isinstance(result, bool | celtypes.BoolType) and not result:
                return False
            if not isinstance(result, bool | celtypes.BoolType):
                if hook.get("failurePolicy", "Fail") == "Ignore":
                    return False
                raise ApiFailure(
                    500,
                    "InternalError",
                    f'Internal error occurred: failed calling webhook "{hook["name"]}": '
                    f"matchCondition {condition.get('name')!r}: {cel.error_text(result)}",
                )
        return True

    @staticmethod
    def _review_request(attempt: Attempt, obj: Obj | None) -> Obj:
        rt, operation, old, write = attempt.rt, attempt.operation, attempt.old, attempt.write
        target = obj if obj is not None else old or {"metadata": {}}
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        gvr = {"group": rt.group, "version": rt.version, "resource": rt.plural}
        request: Obj = {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": target["metadata"].get("name"),
            "namespace": target["metadata"].get("namespace"),
            "operation": operation,
            "userInfo": {"username": write.user.name, "groups": list(write.user.groups)},
            "object": obj,
            "oldObject": old,
            "dryRun": write.dry_run,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions"}.get(
                    operation, "DeleteOptions"
                ),
                **({"dryRun": ["All"]} if write.dry_run else {}),
            },
        }
        if attempt.sub:
            request["subResource"] = attempt.sub
            request["requestSubResource"] = attempt.sub
        return request

    async def _call_webhook(self, hook: Obj, attempt: Attempt, obj: Obj | None) -> Obj | None:
        if self._session is None:
            self._session = ClientSession()
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": self._review_request(attempt, obj),
        }
        timeout = ClientTimeout(total=hook.get("timeoutSeconds", 10))
        try:
            async with self._session.post(hook["url"], json=review, timeout=timeout) as rsp:
                rsp.raise_for_status()
                answer = (await rsp.json())["response"]
        except Exception as error:  # noqa: BLE001 - any failure to call is a webhook failure
            if hook.get("failurePolicy", "Fail") == "Ignore":
                return obj
            raise ApiFailure(
                500,
                "InternalError",
                f'Internal error occurred: failed calling webhook "{hook["name"]}": {error}',
            ) from None
        for warning in answer.get("warnings") or []:
            attempt.write.warnings.append(str(warning))
        if not answer.get("allowed"):
            status = answer.get("status") or {}
            code = status.get("code") or 400
            raise ApiFailure(
                code if 400 <= code < 600 else 400,
                "Forbidden" if code == 403 else "BadRequest",
                f'admission webhook "{hook["name"]}" denied the request: '
                f"{status.get('message', '')}",
            )
        if answer.get("patch") and obj is not None and hook["type"] == "mutating":
            ops = json.loads(base64.b64decode(answer["patch"]))
            obj = jsonpatch.apply_patch(obj, ops)
        return obj


def _rule_matches(rule: Obj, rt: ResourceType, operation: str, sub: str | None) -> bool:
    """An admission rule: `resources` as the API server reads them (`*` is every resource but
    no subresource; `*/*` everything; `models/*` every subresource of models; `*/status`)."""
    if not (
        {"*", rt.group} & set(rule.get("apiGroups", []))
        and {"*", rt.version} & set(rule.get("apiVersions", []))
        and {"*", operation} & set(rule.get("operations", []))
    ):
        return False
    scope = rule.get("scope", "*")
    if scope == "Namespaced" and not rt.namespaced or scope == "Cluster" and rt.namespaced:
        return False
    for resource in rule.get("resources", []):
        res, _, res_sub = resource.partition("/")
        if res not in ("*", rt.plural):
            continue
        if (res_sub or None) == sub or (sub and res_sub == "*"):
            return True
    return False


def _rbac_problems(rt: ResourceType, obj: Obj, old: Obj | None) -> list[str]:
    problems = []
    if rt.kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = obj.get("roleRef") or {}
        if not ref.get("name") or ref.get("kind") not in ("Role", "ClusterRole"):
            problems.append("roleRef: Required value: a kind Role or ClusterRole and a name")
        if rt.kind == "ClusterRoleBinding" and ref.get("kind") == "Role":
            problems.append(
                'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"'
            )
        if old is not None and old.get("roleRef") != obj.get("roleRef"):
            problems.append(f"roleRef: Invalid value: {json.dumps(ref)}: cannot change roleRef")
        for i, subject in enumerate(obj.get("subjects") or []):
            if subject.get("kind") not in ("User", "Group", "ServiceAccount"):
                problems.append(f"subjects[{i}].kind: Unsupported value: {subject.get('kind')!r}")
    elif not _rules_hold(obj.get("rules") or []):
        problems.append("rules: Invalid value: each rule must be an object")
    return problems


def _too_large() -> ApiFailure:
    return ApiFailure(
        413, "RequestEntityTooLarge", f"Request entity too large: limit is {BODY_LIMIT}"
    )


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


async def _acall(fn: Callable[[], Any]) -> Any:
    return fn()


def _at(items: list[str], index: int) -> str | None:
    return items[index] if len(items) > index else None


def _line(type_: str, obj: Obj) -> bytes:
    return (json.dumps({"type": type_, "object": obj}) + "\n").encode()
