"""A small synchronous client for tests: what `kubectl` would do, as a given user."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

Obj = dict[str, Any]

# kind -> (group, version, plural) for the kinds the tests touch.
KINDS = {
    "Experiment": ("aiml024.io", "v1alpha1", "experiments"),
    "Model": ("aiml024.io", "v1alpha1", "models"),
    "Deployment": ("aiml024.io", "v1alpha1", "deployments"),
    "Workflow": ("argoproj.io", "v1alpha1", "workflows"),
    "CronWorkflow": ("argoproj.io", "v1alpha1", "cronworkflows"),
    "SeldonDeployment": ("machinelearning.seldon.io", "v1", "seldondeployments"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
    "PrometheusRule": ("monitoring.coreos.com", "v1", "prometheusrules"),
    "Event": ("", "v1", "events"),
    "Namespace": ("", "v1", "namespaces"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Secret": ("", "v1", "secrets"),
    "Pod": ("", "v1", "pods"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "ClusterRole": ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
    "SubjectAccessReview": ("authorization.k8s.io", "v1", "subjectaccessreviews"),
    "SelfSubjectAccessReview": ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
    "LocalSubjectAccessReview": ("authorization.k8s.io", "v1", "localsubjectaccessreviews"),
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "SubjectAccessReview",
    "SelfSubjectAccessReview",
}


class ApiError(Exception):
    def __init__(self, code: int, body: Obj):
        super().__init__(f"{code}: {body.get('message', body)}")
        self.code, self.body = code, body

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class Client:
    """Requests as `user` (the bearer token; `groups` are sent in it as `user|g1,g2`).
    `warnings` holds the Warning headers of the last answer (e.g. pruned unknown fields)."""

    def __init__(
        self,
        url: str,
        user: str = "alice",
        namespace: str = "default",
        groups: list[str] | None = None,
    ):
        token = user + ("|" + ",".join(groups) if groups else "")
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.url, self.user = url, user
        self.namespace = namespace
        self.warnings: list[str] = []

    def close(self) -> None:
        self.http.close()

    def path(
        self,
        kind: str,
        name: str | None = None,
        sub: str | None = None,
        namespace: str | None = None,
    ) -> str:
        group, version, plural = KINDS[kind]
        root = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if kind not in CLUSTER_SCOPED:
            root += f"/namespaces/{namespace or self.namespace}"
        return root + f"/{plural}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    def _send(self, method: str, path: str, **kwargs: Any) -> Obj:
        rsp = self.http.request(method, path, **kwargs)
        self.warnings = rsp.headers.get_list("Warning")
        body = rsp.json() if rsp.content else {}
        if rsp.status_code >= 400:
            raise ApiError(rsp.status_code, body)
        return body  # type: ignore[no-any-return]

    @staticmethod
    def _params(dry_run: bool, field_validation: str | None = None) -> dict[str, str]:
        params = {"dryRun": "All"} if dry_run else {}
        if field_validation:
            params["fieldValidation"] = field_validation
        return params

    def create(
        self, manifest: Obj, dry_run: bool = False, field_validation: str | None = None
    ) -> Obj:
        ns = manifest.get("metadata", {}).get("namespace")
        return self._send(
            "POST",
            self.path(manifest["kind"], namespace=ns),
            json=manifest,
            params=self._params(dry_run, field_validation),
        )

    def update(self, manifest: Obj, sub: str | None = None, dry_run: bool = False) -> Obj:
        """PUT the whole object (its metadata.resourceVersion, if any, must be current)."""
        meta = manifest["metadata"]
        return self._send(
            "PUT",
            self.path(manifest["kind"], meta["name"], sub, meta.get("namespace")),
            json=manifest,
            params=self._params(dry_run),
        )

    def get(self, kind: str, name: str) -> Obj:
        return self._send("GET", self.path(kind, name))

    def find(self, kind: str, name: str) -> Obj | None:
        try:
            return self.get(kind, name)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def list(self, kind: str, selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": selector} if selector else {}
        return self._send("GET", self.path(kind), params=params)["items"]  # type: ignore[no-any-return]

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        sub: str | None = None,
        json_patch: bool = False,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> Obj:
        ctype = "application/json-patch+json" if json_patch else "application/merge-patch+json"
        return self._send(
            "PATCH",
            self.path(kind, name, sub),
            json=patch,
            headers={"Content-Type": ctype},
            params=self._params(dry_run, field_validation),
        )

    def annotate(self, kind: str, name: str, key: str, value: str | None) -> Obj:
        """`kubectl annotate [--overwrite] kind/name key=value` (None: `key-`)."""
        return self.patch(kind, name, {"metadata": {"annotations": {key: value}}})

    def delete(self, kind: str, name: str, dry_run: bool = False) -> Obj:
        return self._send("DELETE", self.path(kind, name), params=self._params(dry_run))

    def can_i(
        self, verb: str, resource: str, group: str = "", name: str = "", sub: str = ""
    ) -> bool:
        """`kubectl auth can-i` (a SelfSubjectAccessReview in this client's namespace)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": sub,
                    "name": name,
                }
            },
        }
        return bool(self.create(review)["status"]["allowed"])

    def events(self, name: str | None = None) -> list[Obj]:
        items = self.list("Event")
        return [e for e in items if name is None or e["involvedObject"].get("name") == name]

    def wait_for(
        self, kind: str, name: str, check: Callable[[Obj], Any], timeout: float = 10, what: str = ""
    ) -> Obj:
        """Poll until check(obj) is truthy (a missing object counts as None)."""
        deadline = time.monotonic() + timeout
        last: Obj | None = None
        while time.monotonic() < deadline:
            last = self.find(kind, name)
            try:
                if check(last):  # type: ignore[arg-type]
                    return last  # type: ignore[return-value]
            except (KeyError, TypeError, IndexError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {kind}/{name} {what}; last seen: {last}")
