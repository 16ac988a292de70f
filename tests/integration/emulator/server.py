"""The emulated API server: aiohttp, one event loop in its own thread, everything in memory.

Faithful where the operator's correctness depends on it:
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
- validation against the CRD schemas (aiml024 kinds: crds/; others: ../shared/schemas/),
  refused with 422 `Invalid` like the real server (stricter: unknown fields are refused rather
  than pruned, which catches generator bugs);
- admission webhooks from (Mutating|Validating)WebhookConfiguration manifests, called over HTTP
  with an AdmissionReview carrying the caller's userInfo (the bearer token is the user name).

Not emulated: RBAC (requests are recorded in `audit` so a test can check them against the
ClusterRole instead), defaulting from schemas, CEL rules, field selectors, pagination,
server-side apply, bookmarks.
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

import jsonpatch
import yaml
from aiohttp import ClientSession, ClientTimeout, web
from tests.schema_validation import SCHEMAS, validate_against_crd

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CRDS = [
    *sorted((REPO / "crds").glob("*.yaml")),
    SCHEMAS / "argo-workflows" / "argoproj.io_workflows.yaml",
    SCHEMAS
    / "seldon-core-v1"
    / "apache-2.0_v1.17.1"
    / "machinelearning.seldon.io_seldondeployments.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_servicemonitors.yaml",
    SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_prometheusrules.yaml",
]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
OPERATOR_USER = "system:serviceaccount:aiml024-system:aiml024-operator"

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

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


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


class Emulator:
    """`with Emulator() as api:` serves on http://127.0.0.1:<port> until the block ends."""

    def __init__(
        self,
        crd_files: list[Path] | None = None,
        history: int = 100_000,
        validate: bool = True,
        namespaces: tuple[str, ...] = ("default",),
    ):
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.crds: list[Obj] = []
        self.validate = validate
        for rt in (
            ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"]),
            ResourceType("", "v1", "events", "Event", True, "event", ["ev"]),
            ResourceType(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                False,
                "customresourcedefinition",
                ["crd"],
            ),
        ):
            self.types[rt.key] = rt
        for path in crd_files if crd_files is not None else DEFAULT_CRDS:
            self._load_crd(Path(path))
        self.store: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {k: {} for k in self.types}
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.rv = 0
        self.history: deque[tuple[int, tuple[str, str], str, Obj]] = deque(maxlen=history)
        self.watches: set[Watch] = set()
        self.webhooks: list[Obj] = []
        self.audit: set[tuple[str, str, str, str]] = set()  # (user, verb, group, resource[/sub])
        self.request_seconds: list[tuple[str, float]] = []  # (verb, seconds) for benchmarks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""
        for ns in namespaces:
            self._put_direct(self.types[("", "namespaces")], {"metadata": {"name": ns}})
        for crd in self.crds:
            self._put_direct(self.types[("apiextensions.k8s.io", "customresourcedefinitions")], crd)

    # -- setup --------------------------------------------------------------------------------

    def _load_crd(self, path: Path) -> None:
        with open(path, "rb") as handle:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            crd = next(d for d in yaml.load_all(handle, Loader=loader) if d)
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
        )
        self.types[rt.key] = rt
        # Served to kopf's CRD watch without the (multi-megabyte) schemas.
        slim = copy.deepcopy({k: v for k, v in crd.items() if k != "spec"})
        slim["spec"] = {k: v for k, v in spec.items() if k != "versions"}
        slim["spec"]["versions"] = [
            {k: v for k, v in ver.items() if k != "schema"} for ver in spec["versions"]
        ]
        self.crds.append(slim)

    def add_webhook_configuration(self, manifest: Obj, url_for: Callable[[Obj], str]) -> None:
        """Register the webhooks of a (Mutating|Validating)WebhookConfiguration; `url_for`
        maps each webhook's clientConfig (service + path) to a URL this process can reach."""
        kind = "mutating" if manifest["kind"].startswith("Mutating") else "validating"
        for hook in manifest.get("webhooks", []):
            self.webhooks.append({**hook, "type": kind, "url": url_for(hook["clientConfig"])})

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
            self._loop = loop
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

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (for tests that read the store directly)."""
        assert self._loop is not None
        done: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_acall(fn), self._loop)
        return done.result(10)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        user = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user = user or "system:anonymous"
        try:
            response = await self._route(request, user)
        except ApiFailure as failure:
            response = web.json_response(failure.status(), status=failure.code)
        self.request_seconds.append((request.method, time.perf_counter() - started))
        return response

    async def _route(self, request: web.Request, user: str) -> web.StreamResponse:
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
        verb = {
            "GET": "get",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(request.method, request.method.lower())
        if request.method == "GET" and name is None:
            verb = "watch" if request.query.get("watch") in ("true", "1") else "list"
        self.audit.add((user, verb, group, rt.plural + (f"/{sub}" if sub else "")))
        if verb == "watch":
            return await self._watch(request, rt, namespace)
        if verb == "list":
            return web.json_response(self._list(rt, namespace, request.query.get("labelSelector")))
        if verb == "get":
            return web.json_response(self._get(rt, namespace, name))
        if verb == "create":
            body = await request.json()
            created = await self._create(rt, namespace, body, user)
            return web.json_response(created, status=201)
        if verb in ("update", "patch"):
            assert name is not None
            body = await request.json()
            ctype = request.headers.get("Content-Type", "").split(";")[0]
            updated = await self._update(rt, namespace, name, sub, body, ctype, verb, user)
            return web.json_response(updated)
        if verb == "delete":
            assert name is not None
            body = await request.json() if request.can_read_body else {}
            policy = request.query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            return web.json_response(self._delete(rt, namespace, name, policy != "Orphan"))
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
                    "verbs": VERBS,
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

    # -- reads --------------------------------------------------------------------------------

    def _get(self, rt: ResourceType, namespace: str | None, name: str | None) -> Obj:
        obj = self.store[rt.key].get((namespace or "", name or ""))
        if obj is None:
            raise ApiFailure(
                404,
                "NotFound",
                f'{rt.plural}.{rt.group} "{name}" not found',
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

    def _check_valid(self, rt: ResourceType, obj: Obj) -> None:
        if not self.validate or rt.crd_path is None:
            return
        view = dict(obj)
        # ownerReferences are checked here: tests/schema_validation.py's ObjectMeta schema
        # passes through its strict conversion, which refuses every field of an owner ref.
        view["metadata"] = {
            k: v
            for k, v in obj["metadata"].items()
            if k in _ALLOWED_META and k != "ownerReferences"
        }
        problems = validate_against_crd(view, rt.crd_path)
        for i, ref in enumerate(obj["metadata"].get("ownerReferences") or []):
            missing = [k for k in ("apiVersion", "kind", "name", "uid") if not ref.get(k)]
            if missing:
                problems.append(f"metadata.ownerReferences[{i}]: missing {', '.join(missing)}")
        if problems:
            name = obj["metadata"].get("name")
            raise ApiFailure(
                422,
                "Invalid",
                f'{rt.kind}.{rt.group} "{name}" is invalid: ' + "; ".join(problems),
                {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.kind,
                    "causes": [{"message": p} for p in problems],
                },
            )

    async def _create(self, rt: ResourceType, namespace: str | None, body: Obj, user: str) -> Obj:
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
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiFailure(422, "Invalid", "metadata.name: Required value")
        obj.setdefault("apiVersion", rt.api_version)  # the server fills them from the URL
        obj.setdefault("kind", rt.kind)
        if obj.get("apiVersion") != rt.api_version or obj.get("kind") != rt.kind:
            raise ApiFailure(400, "BadRequest", f"expected {rt.api_version} {rt.kind}")
        for key in (
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
        ):
            meta.pop(key, None)
        if rt.status_subresource:
            obj.pop("status", None)
        obj = await self._admit(rt, "CREATE", obj, None, user)
        self._check_valid(rt, obj)
        key = (namespace or "", obj["metadata"]["name"])
        if key in self.store[rt.key]:
            raise ApiFailure(
                409,
                "AlreadyExists",
                f'{rt.plural}.{rt.group} "{key[1]}" already exists',
                {"name": key[1], "group": rt.group, "kind": rt.plural},
            )
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
        user: str,
    ) -> Obj:
        if sub not in (None, "status") or (sub == "status" and not rt.status_subresource):
            raise ApiFailure(404, "NotFound", f"{rt.plural} has no subresource {sub}")
        for _attempt in range(10):  # like the server's GuaranteedUpdate: retry on a race
            old = self._get(rt, namespace, name)
            new = self._apply_change(rt, old, body, ctype, verb)
            if sub == "status":
                kept = copy.deepcopy(old)
                kept.pop("status", None)
                if "status" in new:
                    kept["status"] = new["status"]
                new = kept
            elif rt.status_subresource:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            for key in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "name",
                "namespace",
            ):
                if key in old["metadata"]:
                    new.setdefault("metadata", {})[key] = old["metadata"][key]
            if sub is None:
                new = await self._admit(rt, "UPDATE", new, old, user)
            current = self.store[rt.key].get((namespace or "", name))
            if current is None:
                raise ApiFailure(404, "NotFound", f'{rt.plural}.{rt.group} "{name}" not found')
            if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                continue  # changed while the webhooks ran: recompute against the fresh object
            if new == old:
                return new  # a no-op write does not bump resourceVersion
            self._check_valid(rt, new)
            if "generation" in old["metadata"] and _essence(new, rt) != _essence(old, rt):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.store[rt.key][(namespace or "", name)] = new
            self._emit(rt, "MODIFIED", new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                self._remove(rt, new, cascade=True)
            return copy.deepcopy(new)
        raise ApiFailure(409, "Conflict", "the object keeps changing; try again")

    def _apply_change(self, rt: ResourceType, old: Obj, body: Any, ctype: str, verb: str) -> Obj:
        current_rv = old["metadata"]["resourceVersion"]
        conflict = ApiFailure(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.plural}.{rt.group} "{old["metadata"]["name"]}": '
            "the object has been modified; please apply your changes to the latest version and "
            "try again",
        )
        if verb == "update":
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current_rv:
                raise conflict
            return copy.deepcopy(body)
        if ctype == "application/json-patch+json":
            try:
                return jsonpatch.apply_patch(old, body)
            except jsonpatch.JsonPatchTestFailed as error:
                raise ApiFailure(422, "Invalid", f"the patch test failed: {error}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise ApiFailure(422, "Invalid", f"the patch cannot be applied: {error}") from None
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current_rv:
                raise conflict
            return merge_patch(old, body)
        raise ApiFailure(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")

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

    async def _admit(
        self, rt: ResourceType, operation: str, obj: Obj, old: Obj | None, user: str
    ) -> Obj:
        for kind in ("mutating", "validating"):
            for hook in self.webhooks:
                if hook["type"] == kind and self._hook_matches(hook, rt, operation):
                    obj = await self._call_webhook(hook, rt, operation, obj, old, user)
        return obj

    @staticmethod
    def _hook_matches(hook: Obj, rt: ResourceType, operation: str) -> bool:
        for rule in hook.get("rules", []):
            if (
                {"*", rt.group} & set(rule.get("apiGroups", []))
                and {"*", rt.version} & set(rule.get("apiVersions", []))
                and {"*", rt.plural} & set(rule.get("resources", []))
                and {"*", operation} & set(rule.get("operations", []))
            ):
                return True
        return False

    async def _call_webhook(
        self, hook: Obj, rt: ResourceType, operation: str, obj: Obj, old: Obj | None, user: str
    ) -> Obj:
        if self._session is None:
            self._session = ClientSession()
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
                "name": obj["metadata"].get("name"),
                "namespace": obj["metadata"].get("namespace"),
                "operation": operation,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": obj,
                "oldObject": old,
                "dryRun": False,
            },
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
        if not answer.get("allowed"):
            status = answer.get("status") or {}
            code = status.get("code") or 400
            raise ApiFailure(
                code if 400 <= code < 600 else 400,
                "Forbidden" if code == 403 else "BadRequest",
                f'admission webhook "{hook["name"]}" denied the request: '
                f"{status.get('message', '')}",
            )
        if answer.get("patch"):
            ops = json.loads(base64.b64decode(answer["patch"]))
            obj = jsonpatch.apply_patch(obj, ops)
        return obj


async def _acall(fn: Callable[[], Any]) -> Any:
    return fn()


def _at(items: list[str], index: int) -> str | None:
    return items[index] if len(items) > index else None


def _line(type_: str, obj: Obj) -> bytes:
    return (json.dumps({"type": type_, "object": obj}) + "\n").encode()
