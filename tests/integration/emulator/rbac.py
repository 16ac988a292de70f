"""The RBAC authorizer, as the API server runs it, over the RBAC objects the emulator stores.

- A request is allowed when any rule of any role bound to the user allows it: ClusterRoleBindings
  grant their ClusterRole everywhere (namespaced resources in every namespace, cluster-scoped
  resources, non-resource URLs); RoleBindings grant their Role or ClusterRole in their own
  namespace only. There is no deny.
- Rules match as in k8s.io/kubernetes/pkg/apis/rbac (`RuleAllows`): verbs and apiGroups with `*`;
  resources as `resource` or `resource/subresource`, `*` (every resource, not subresources), and
  `*/subresource`; `resourceNames` only when the request names an object; `nonResourceURLs`
  exact or with a trailing `*`.
- Subjects: `User` by name, `Group` by membership, `ServiceAccount` by
  `system:serviceaccount:<namespace>:<name>` (a RoleBinding's subject namespace defaults to its
  own).
- ClusterRole aggregation: a ClusterRole with `aggregationRule.clusterRoleSelectors` has the
  union of the rules of every ClusterRole whose labels match a selector (transitively: `view`
  aggregates into `edit`, `edit` into `admin`), its own rules ignored, as the aggregation
  controller rewrites them.
- `system:masters` is allowed everything, before RBAC is asked.
- Escalation prevention for writes to roles and bindings (`covers`): a user may create or update
  a Role or ClusterRole only with rules they hold themselves (or with the `escalate` verb on it),
  and may bind a role only if they hold its rules (or have the `bind` verb on it).

Decisions are cached per user and request; the caches are dropped on any write to an RBAC object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def superuser(self) -> bool:
        return "system:masters" in self.groups


@dataclass(frozen=True)
class Attributes:
    """What the API server's RequestInfo gives the authorizer."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests
    resource_request: bool = True

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def forbidden_message(self, user: str) -> str:
        """kube's `forbiddenMessage`, e.g. `User "alice" cannot patch resource "models/status"
        in API group "aiml024.io" in the namespace "ns"`."""
        if not self.resource_request:
            return f'User "{user}" cannot {self.verb} path "{self.path}"'
        where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        return (
            f'User "{user}" cannot {self.verb} resource "{self.combined}" '
            f'in API group "{self.group}" {where}'
        )


def _has(items: Iterable[str] | None, value: str) -> bool:
    items = items or []
    return "*" in items or value in items


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if (
                url == "*"
                or url == attrs.path
                or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            ):
                return True
        return False
    if not _has(rule.get("apiGroups"), attrs.group):
        return False
    if not _resource_matches(rule.get("resources") or [], attrs.combined, attrs.subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _resource_matches(resources: list[str], combined: str, subresource: str) -> bool:
    for resource in resources:
        if resource in ("*", combined):
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def subject_applies(subject: Obj, user: User, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def _labels_match(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Authorizer:
    """RBAC over `source()`: {kind: {(namespace, name): object}} for Role, ClusterRole,
    RoleBinding, ClusterRoleBinding (the emulator's store, read lazily and cached)."""

    def __init__(self, source: Callable[[], dict[str, dict[tuple[str, str], Obj]]]):
        self._source = source
        self._aggregated: dict[str, list[Obj]] | None = None
        self._grants: dict[
            User, tuple[list[tuple[str, Obj]], dict[str, list[tuple[str, Obj]]]]
        ] = {}
        self._decisions: dict[tuple[User, Attributes], tuple[bool, str]] = {}

    def invalidate(self) -> None:
        self._aggregated = None
        self._grants.clear()
        self._decisions.clear()

    # -- roles -------------------------------------------------------------------------------

    def cluster_role_rules(self, name: str) -> list[Obj] | None:
        if self._aggregated is None:
            self._aggregated = self._aggregate()
        return self._aggregated.get(name)

    def _aggregate(self) -> dict[str, list[Obj]]:
        roles = {name: obj for (_, name), obj in self._source()["ClusterRole"].items()}
        done: dict[str, list[Obj]] = {}

        def rules(name: str, visiting: frozenset[str]) -> list[Obj]:
            if name in done:
                return done[name]
            role = roles[name]
            selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
            if not selectors:
                found = list(role.get("rules") or [])
            else:
                found = []
                for other, obj in sorted(roles.items()):
                    if other == name or other in visiting:
                        continue
                    labels = (obj.get("metadata") or {}).get("labels") or {}
                    if any(_labels_match(s, labels) for s in selectors):
                        for rule in rules(other, visiting | {name}):
                            if rule not in found:
                                found.append(rule)
            if not visiting:
                done[name] = found
            return found

        for name in roles:
            done[name] = rules(name, frozenset())
        return done

    def _role_rules(self, ref: Obj, namespace: str) -> list[Obj]:
        if ref.get("kind") == "ClusterRole":
            return self.cluster_role_rules(str(ref.get("name"))) or []
        role = self._source()["Role"].get((namespace, str(ref.get("name"))))
        return list((role or {}).get("rules") or [])

    # -- grants ------------------------------------------------------------------------------

    def _grants_for(
        self, user: User
    ) -> tuple[list[tuple[str, Obj]], dict[str, list[tuple[str, Obj]]]]:
        """(cluster-wide rules, {namespace: rules}), each rule with the binding that grants it."""
        cached = self._grants.get(user)
        if cached is not None:
            return cached
        source = self._source()
        cluster: list[tuple[str, Obj]] = []
        for (_, name), binding in sorted(source["ClusterRoleBinding"].items()):
            if any(subject_applies(s, user, "") for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                why = f'ClusterRoleBinding "{name}" of ClusterRole "{ref.get("name")}"'
                cluster += [(why, r) for r in self._role_rules(ref, "")]
        namespaced: dict[str, list[tuple[str, Obj]]] = {}
        for (ns, name), binding in sorted(source["RoleBinding"].items()):
            if any(subject_applies(s, user, ns) for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                why = f'RoleBinding "{name}/{ns}" of {ref.get("kind")} "{ref.get("name")}"'
                namespaced.setdefault(ns, []).extend((why, r) for r in self._role_rules(ref, ns))
        self._grants[user] = (cluster, namespaced)
        return cluster, namespaced

    def _visible_rules(self, user: User, attrs: Attributes) -> Iterator[tuple[str, Obj]]:
        cluster, namespaced = self._grants_for(user)
        yield from cluster
        if attrs.resource_request and attrs.namespace:
            yield from namespaced.get(attrs.namespace, [])

    def authorize(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason)."""
        if user.superuser:
            return True, ""
        key = (user, attrs)
        decided = self._decisions.get(key)
        if decided is not None:
            return decided
        decision = (False, "")
        for why, rule in self._visible_rules(user, attrs):
            if rule_allows(rule, attrs):
                decision = (True, f'RBAC: allowed by {why} to User "{user.name}"')
                break
        if len(self._decisions) > 100_000:
            self._decisions.clear()
        self._decisions[key] = decision
        return decision

    def allowed(self, user: User, attrs: Attributes) -> bool:
        return self.authorize(user, attrs)[0]

    # -- escalation --------------------------------------------------------------------------

    def covers(self, user: User, namespace: str, rules: list[Obj]) -> list[Obj]:
        """The rules (split into single grants) that `user` does not hold in `namespace`
        (cluster-wide when empty): empty when the user may grant all of `rules`."""
        if user.superuser:
            return []
        cluster, namespaced = self._grants_for(user)
        held = [r for _, r in cluster] + (
            [r for _, r in namespaced.get(namespace, [])] if namespace else []
        )
        missing: list[Obj] = []
        for rule in rules:
            for atom in _atoms(rule):
                if not any(_rule_covers(owner, atom) for owner in held):
                    missing.append(atom)
        return missing


def _atoms(rule: Obj) -> Iterator[Obj]:
    verbs = rule.get("verbs") or []
    for url in rule.get("nonResourceURLs") or []:
        for verb in verbs:
            yield {"verbs": [verb], "nonResourceURLs": [url]}
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in verbs:
                names = rule.get("resourceNames") or [None]
                for name in names:
                    atom: Obj = {"verbs": [verb], "apiGroups": [group], "resources": [resource]}
                    if name is not None:
                        atom["resourceNames"] = [name]
                    yield atom


def _rule_covers(owner: Obj, atom: Obj) -> bool:
    verb = atom["verbs"][0]
    if not ("*" in (owner.get("verbs") or []) or verb in (owner.get("verbs") or [])):
        return False
    if "nonResourceURLs" in atom:
        url = atom["nonResourceURLs"][0]
        for have in owner.get("nonResourceURLs") or []:
            if have in ("*", url) or (have.endswith("*") and url.startswith(have[:-1])):
                return True
        return False
    group, resource = atom["apiGroups"][0], atom["resources"][0]
    if not ("*" in (owner.get("apiGroups") or []) or group in (owner.get("apiGroups") or [])):
        return False
    resources = owner.get("resources") or []
    if not (
        "*" in resources
        or resource in resources
        or ("/" in resource and f"*/{resource.split('/', 1)[1]}" in resources)
    ):
        return False
    names = owner.get("resourceNames") or []
    return not names or (atom.get("resourceNames") or [None])[0] in names
