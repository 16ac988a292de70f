"""The API emulator refuses what a real API server refuses: CEL rules, RBAC, size limits; and
does what it does: pruning with warnings, webhooks for subresources, dry runs.

These pin the emulator's behaviour, so that the operator's security tests can rely on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from tests.integration.emulator import ApiError, Client, Emulator, cel
from tests.integration.emulator.harness import free_port
from tests.integration.emulator.pruning import prune
from tests.integration.emulator.rbac import Attributes, Authorizer, User, rule_allows
from tests.integration.emulator.server import ADMIN, ARGO_USER, OPERATOR_USER

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


# --- CEL, on its own ---------------------------------------------------------------------------


def _schema(rules: list[Obj], **props: Obj) -> Obj:
    return {"type": "object", "properties": props, "x-kubernetes-validations": rules}


def test_cel_rules_see_self_typed_by_the_schema() -> None:
    schema = _schema(
        [
            {"rule": "has(self.uri) != has(self.sql)", "message": "one of uri and sql"},
            {"rule": "self.ratio > 0 && self.ratio <= 1", "message": "ratio in (0, 1]"},
            {"rule": "!has(self.kind) || self.kind in ['a', 'b']"},
            {"rule": "(has(self.min) ? self.min : 1) <= (has(self.max) ? self.max : 3)"},
            {"rule": "size(self.tags) <= 2 && self.tags.all(t, t.size() > 0)"},
        ],
        uri={"type": "string"},
        sql={"type": "string"},
        ratio={"type": "number"},
        kind={"type": "string"},
        min={"type": "integer"},
        max={"type": "integer"},
        tags={"type": "array", "items": {"type": "string"}},
    )
    good = {"uri": "s3://x", "ratio": 1, "kind": "a", "min": 2, "tags": ["x"]}
    assert cel.validate(schema, good) == []  # ratio 1 is a double: 1 <= 1 compares
    bad = {"uri": "s3://x", "sql": "select 1", "ratio": 2, "kind": "c", "min": 5, "tags": [""]}
    found = [str(v) for v in cel.validate(schema, bad)]
    assert found == [
        '<nil>: Invalid value: "object": one of uri and sql',
        '<nil>: Invalid value: "object": ratio in (0, 1]',
        "<nil>: Invalid value: \"object\": failed rule: !has(self.kind) || self.kind in ['a', 'b']",
        '<nil>: Invalid value: "object": failed rule: '
        "(has(self.min) ? self.min : 1) <= (has(self.max) ? self.max : 3)",
        '<nil>: Invalid value: "object": failed rule: '
        "size(self.tags) <= 2 && self.tags.all(t, t.size() > 0)",
    ]


def test_cel_nested_nodes_maps_and_lists_report_their_path() -> None:
    item = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "weight": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.weight >= 0", "messageExpression": "'weight of ' + self.name"}
        ],
    }
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": item},
                    "byName": {"type": "object", "additionalProperties": item},
                },
            }
        },
    }
    obj = {
        "spec": {
            "items": [{"name": "a", "weight": 1}, {"name": "b", "weight": -1}],
            "byName": {"c": {"name": "c", "weight": -2}},
        }
    }
    assert [str(v) for v in cel.validate(schema, obj)] == [
        'spec.items[1]: Invalid value: "object": weight of b',
        'spec.byName[c]: Invalid value: "object": weight of c',
    ]


def test_cel_transition_rules_only_on_update_with_an_old_value() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "task": {
                        "type": "string",
                        "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "spec.task is immutable"}
                        ],
                    },
                    "note": {"type": "string"},
                },
            }
        },
    }
    assert cel.validate(schema, {"spec": {"task": "a"}}) == []  # CREATE: not evaluated
    assert cel.validate(schema, {"spec": {"task": "a"}}, {"spec": {}}) == []  # nothing before
    assert cel.validate(schema, {"spec": {"task": "a", "note": "x"}}, {"spec": {"task": "a"}}) == []
    changed = cel.validate(schema, {"spec": {"task": "b"}}, {"spec": {"task": "a"}})
    assert [str(v) for v in changed] == [
        'spec.task: Invalid value: "string": spec.task is immutable'
    ]
    assert changed[0].cause() == {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "string": spec.task is immutable',
        "field": "spec.task",
    }


def test_cel_ratchets_unchanged_values_and_correlates_list_maps() -> None:
    item = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.v >= oldSelf.v", "message": "v only grows"},
            {"rule": "self.v < 10", "message": "v below 10"},
        ],
    }
    schema = {
        "type": "object",
        "properties": {
            "keyed": {
                "type": "array",
                "items": item,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "atomic": {"type": "array", "items": item},
        },
    }
    old = {
        "keyed": [{"name": "a", "v": 20}, {"name": "b", "v": 5}],
        "atomic": [{"name": "a", "v": 5}],
    }
    # Unchanged invalid items ratchet; the map list correlates by key even when reordered.
    new = {
        "keyed": [{"name": "b", "v": 4}, {"name": "a", "v": 20}],
        "atomic": [{"name": "a", "v": 3}],
    }
    assert [str(v) for v in cel.validate(schema, new, old)] == [
        'keyed[0]: Invalid value: "object": v only grows'  # atomic list items do not correlate
    ]


def test_cel_reasons_field_paths_and_escaped_names() -> None:
    schema = {
        "type": "object",
        "properties": {
            "x-y": {"type": "string"},
            "in": {"type": "integer"},
            "f": {"type": "number"},
        },
        "x-kubernetes-validations": [
            {"rule": "self.x__dash__y == 'ok'", "reason": "FieldValueForbidden", "fieldPath": ".x-y",
             "message": "x-y must be ok"},
            {"rule": "self.__in__ == 1", "reason": "FieldValueRequired", "message": "in is one"},
            {"rule": "self.f == 1 && self.f < 2 && 1.5 > self.__in__"},
        ],
    }  # fmt: skip
    assert cel.validate(schema, {"x-y": "ok", "in": 1, "f": 1}) == []
    assert [str(v) for v in cel.validate(schema, {"x-y": "no", "in": 2, "f": 1})] == [
        "x-y: Forbidden: x-y must be ok",
        "<nil>: Required value: in is one",
        '<nil>: Invalid value: "object": failed rule: self.f == 1 && self.f < 2 && 1.5 > self.__in__',
    ]


def test_cel_kubernetes_library_functions_and_errors() -> None:
    def run(expr: str, value: Any) -> Any:
        return cel.evaluate(expr, self=cel.to_cel(value, None))

    assert run("self.s.lowerAscii() == 'abc' && self.s.upperAscii() == 'ABC'", {"s": "aBc"})
    assert run("self.s.split(',').join('-') == 'a-b-c'", {"s": "a,b,c"})
    assert run("self.s.indexOf('b') == 1 && self.s.replace('b', 'x') == 'axc'", {"s": "abc"})
    assert run("self.l.isSorted() && self.l.sum() == 6 && self.l.max() == 3", {"l": [1, 2, 3]})
    assert run("self.s.matches('^[a-c]+$') && self.s.find('b.') == 'bc'", {"s": "abc"})
    assert run(
        "self.l.exists_one(x, x == 2) && self.l.map(x, x * 2) == [2, 4, 6]", {"l": [1, 2, 3]}
    )
    assert run("self.a == 1 && self.a != 'one'", {"a": 1.0})  # heterogeneous equality
    missing = run("self.nope > 1", {})
    assert cel.error_text(missing) == "no such key: nope"
    schema = _schema([{"rule": "self.nope > 1"}])
    assert [str(v) for v in cel.validate(schema, {})] == [
        '<nil>: Invalid value: "object": no such key: nope'
    ]


def test_cel_rules_of_the_upstream_crds_all_compile() -> None:
    """Every rule in crds/ and the upstream CRDs the emulator serves parses with celpy."""
    from tests.integration.emulator.server import DEFAULT_CRDS
    from tests.schema_validation import cel_rules, crd_schema, load_crd

    seen = 0
    for path in DEFAULT_CRDS:
        crd = load_crd(path)
        for version in crd["spec"]["versions"]:
            for _, _, rule in cel_rules(crd_schema(crd, version["name"])):
                cel.program(rule["rule"])
                seen += 1
    assert seen > 10


# --- pruning, on its own ---------------------------------------------------------------------


def test_pruning_drops_undeclared_fields_and_keeps_preserved_ones() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "a": {"type": "string"},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "list": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    },
                    "map": {"type": "object", "additionalProperties": {"type": "string"}},
                    "maybe": {"type": "string", "nullable": True},
                },
            }
        },
    }
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "n", "bogus": 1},
        "spec": {
            "a": "1",
            "b": 2,
            "free": {"anything": {"deep": True}},
            "list": [{"x": 1, "y": 2}],
            "map": {"k": "v", "gone": None},
            "maybe": None,
        },
        "extra": True,
    }
    assert prune(schema, obj) == ["metadata.bogus", "spec.b", "spec.list[0].y", "extra"]
    assert obj == {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "n"},
        "spec": {
            "a": "1",
            "free": {"anything": {"deep": True}},
            "list": [{"x": 1}],
            "map": {"k": "v"},
            "maybe": None,
        },
    }


# --- RBAC, on its own ----------------------------------------------------------------------------


def test_rbac_rules_match_like_the_api_server() -> None:
    rule = {"apiGroups": ["aiml024.io"], "resources": ["models"], "verbs": ["patch"]}
    assert rule_allows(rule, Attributes("patch", "aiml024.io", "models", "", "ns", "m"))
    assert not rule_allows(rule, Attributes("patch", "aiml024.io", "models", "status", "ns", "m"))
    star_sub = {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}
    assert rule_allows(star_sub, Attributes("update", "x", "models", "status"))
    assert not rule_allows(star_sub, Attributes("update", "x", "models"))
    named = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]}
    assert rule_allows(named, Attributes("get", "", "secrets", "", "ns", "a"))
    assert not rule_allows(named, Attributes("get", "", "secrets", "", "ns", "b"))
    assert not rule_allows(
        {**named, "verbs": ["list"]}, Attributes("list", "", "secrets", "", "ns")
    )
    urls = {"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}
    assert rule_allows(urls, Attributes("get", path="/apis/x/v1", resource_request=False))
    assert not rule_allows(urls, Attributes("get", path="/metrics", resource_request=False))


def test_rbac_aggregates_roles_transitively_and_recomputes_after_writes() -> None:
    objects: dict[str, dict[tuple[str, str], Obj]] = {
        "Role": {},
        "RoleBinding": {},
        "ClusterRoleBinding": {},
        "ClusterRole": {},
    }
    docs = yaml.safe_load_all(
        (REPO / "tests/integration/emulator/roles/kubernetes.yaml").read_text()
    )
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            objects["ClusterRole"][("", doc["metadata"]["name"])] = doc
    authorizer = Authorizer(lambda: objects)
    objects["RoleBinding"][("ns", "b")] = {
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "carol"}],
    }
    carol = User("carol", ("system:authenticated",))
    assert authorizer.allowed(carol, Attributes("get", "", "configmaps", "", "ns"))  # view
    assert authorizer.allowed(carol, Attributes("create", "", "pods", "", "ns"))  # edit
    assert authorizer.allowed(
        carol, Attributes("create", "rbac.authorization.k8s.io", "rolebindings", "", "ns")
    )
    assert not authorizer.allowed(carol, Attributes("get", "", "configmaps", "", "other"))
    widget = Attributes("get", "example.com", "widgets", "", "ns")
    assert not authorizer.allowed(carol, widget)
    objects["ClusterRole"][("", "widgets-view")] = {
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}],
    }  # fmt: skip
    assert not authorizer.allowed(carol, widget)  # cached
    authorizer.invalidate()
    assert authorizer.allowed(carol, widget)  # view -> edit -> admin


# --- the emulator over HTTP ----------------------------------------------------------------------


class Hooks:
    """A webhook server recording every AdmissionReview request; allows everything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reviews: list[Obj] = []
        self.patch: list[Obj] | None = None
        started = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            review = await request.json()
            self.reviews.append({"path": request.path, **review["request"]})
            answer: Obj = {"uid": review["request"]["uid"], "allowed": True}
            if self.patch and request.path.startswith("/mutate"):
                answer["patchType"] = "JSONPatch"
                answer["patch"] = base64.b64encode(json.dumps(self.patch).encode()).decode()
            return web.json_response(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
            )

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            started.set()
            await asyncio.Event().wait()

        threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
        started.wait(10)

    def seen(self, path: str) -> list[Obj]:
        return [r for r in self.reviews if r["path"] == path]


def _hook(name: str, path: str, resources: list[str], side_effects: str = "None") -> Obj:
    return {
        "name": f"{name}.test.io",
        "sideEffects": side_effects,
        "failurePolicy": "Fail",
        "clientConfig": {"service": {"name": "hooks", "namespace": "t", "path": path}},
        "rules": [
            {
                "apiGroups": ["aiml024.io"],
                "apiVersions": ["v1alpha1"],
                "resources": resources,
                "operations": ["CREATE", "UPDATE", "DELETE"],
            }
        ],
    }


@pytest.fixture(scope="module")
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture(scope="module")
def api(hooks: Hooks) -> Iterator[Emulator]:
    with Emulator(namespaces=("default", "team-a", "team-b")) as emulator:
        emulator.add_webhook_configuration(
            {
                "kind": "ValidatingWebhookConfiguration",
                "webhooks": [
                    _hook("models", "/models", ["models"]),
                    _hook("status", "/status", ["models/status"]),
                    _hook("star-status", "/star-status", ["*/status"]),
                    _hook("star", "/star", ["*"]),
                    _hook("deployments", "/deployments", ["deployments"], side_effects="Some"),
                    {
                        **_hook("conditioned", "/conditioned", ["models"]),
                        "matchConditions": [{
                            "name": "labelled",
                            "expression": "has(object.metadata.labels) "
                                          "&& 'hooked' in object.metadata.labels",
                        }],
                    },  # fmt: skip
                ],
            },
            lambda cc: f"http://127.0.0.1:{hooks.port}{cc['service']['path']}",
        )
        emulator.add_webhook_configuration(
            {"kind": "MutatingWebhookConfiguration", "webhooks": [_hook("mutate", "/mutate", ["models"])]},
            lambda cc: f"http://127.0.0.1:{hooks.port}{cc['service']['path']}",
        )  # fmt: skip
        emulator.bind("team-a", "edit", user="alice")
        emulator.bind("team-a", "admin", user="ada")
        emulator.bind("team-a", "view", user="vic")
        emulator.add_user("bob", groups=["risk-officers"])
        emulator.bind("team-a", "aiml024-approver", group="risk-officers")
        yield emulator


def _model(name: str = "m", **spec: Any) -> Obj:
    return {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {
            "source": {"artifactUri": f"s3://models/{name}", "sha256": "a" * 64},
            "task": "classification",
            "owner": "alice",
            **spec,
        },
    }


def _refused(code: int, call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as error:
        call(*args, **kwargs)
    assert error.value.code == code, error.value.body
    return error.value.message


def test_cel_rules_refuse_writes_with_the_api_servers_message(api: Emulator) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    admin.create(_model("cel"))
    message = _refused(422, admin.patch, "Model", "cel", {"spec": {"task": "regression"}})
    assert message == (
        'Model.aiml024.io "cel" is invalid: spec.task: Invalid value: "string": '
        "spec.task is immutable; register a new Model instead"
    )
    message = _refused(
        422, admin.patch, "Model", "cel", {"spec": {"source": {"artifactUri": "s3://other"}}}
    )
    assert 'spec.source: Invalid value: "object": spec.source is immutable' in message
    both = _model("both")
    both["spec"]["source"] = {"artifactUri": "s3://x"}  # no sha256
    message = _refused(422, admin.create, both)
    assert 'spec.source: Invalid value: "object": source.sha256 is required' in message
    assert admin.patch("Model", "cel", {"spec": {"description": "fine"}})["spec"]["description"]
    deployment = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"model": "cel", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
    }
    message = _refused(422, admin.create, deployment)
    assert "spec.autoscaling: Invalid value" in message and "must not exceed" in message
    cause = _cause(admin, deployment)
    assert cause["field"] == "spec.autoscaling" and cause["reason"] == "FieldValueInvalid"


def _cause(client: Client, manifest: Obj) -> Obj:
    with pytest.raises(ApiError) as error:
        client.create(manifest)
    return error.value.body["details"]["causes"][0]  # type: ignore[no-any-return]


def test_unknown_fields_are_pruned_with_a_warning(api: Emulator) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    doc = _model("pruned", foo="bar")
    doc["metadata"]["bogus"] = 1
    created = admin.create(doc)
    assert "foo" not in created["spec"] and "bogus" not in created["metadata"]
    assert admin.warnings == [
        '299 - "unknown field \\"metadata.bogus\\""',
        '299 - "unknown field \\"spec.foo\\""',
    ]
    admin.patch("Model", "pruned", {"spec": {"extra": {"deep": 1}}})
    assert admin.warnings == ['299 - "unknown field \\"spec.extra\\""']
    assert "extra" not in admin.get("Model", "pruned")["spec"]
    message = _refused(
        400, admin.patch, "Model", "pruned", {"spec": {"x": 1}}, field_validation="Strict"
    )
    assert message == 'strict decoding error: unknown field "spec.x"'
    # Types, enums and required fields are still refused.
    assert "spec.task" in _refused(422, admin.patch, "Model", "pruned", {"spec": {"task": 3}})
    assert "spec.stage" in _refused(
        422, admin.patch, "Model", "pruned", {"spec": {"stage": "prod"}}
    )
    assert "source" in _refused(
        422, admin.create, {**_model("nosrc"), "spec": {"task": "regression"}}
    )


def test_webhooks_are_called_for_the_status_subresource_only_when_named(
    api: Emulator, hooks: Hooks
) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    admin.create(_model("hooked"))
    hooks.reviews.clear()
    admin.patch("Model", "hooked", {"status": {"sha256": "b" * 64}}, sub="status")
    called = sorted({r["path"] for r in hooks.reviews})
    assert called == ["/star-status", "/status"]  # not /models, /star, /mutate
    review = hooks.seen("/status")[0]
    assert (review["subResource"], review["requestSubResource"]) == ("status", "status")
    assert review["operation"] == "UPDATE" and review["dryRun"] is False
    assert review["userInfo"] == {
        "username": "admin",
        "groups": ["system:masters", "system:authenticated"],
    }
    assert review["object"]["status"]["sha256"] == "b" * 64
    hooks.reviews.clear()
    admin.patch("Model", "hooked", {"spec": {"description": "x"}})
    assert sorted({r["path"] for r in hooks.reviews}) == ["/models", "/mutate", "/star"]
    assert "subResource" not in hooks.seen("/models")[0]


def test_webhooks_are_called_only_when_their_match_conditions_hold(
    api: Emulator, hooks: Hooks
) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    hooks.reviews.clear()
    admin.create(_model("plain"))
    labelled = _model("labelled")
    labelled["metadata"]["labels"] = {"hooked": "yes"}
    admin.create(labelled)
    assert [r["name"] for r in hooks.seen("/conditioned")] == ["labelled"]


def test_mutating_webhooks_patch_before_validation(api: Emulator, hooks: Hooks) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    hooks.patch = [{"op": "add", "path": "/spec/description", "value": "stamped"}]
    try:
        created = admin.create(_model("mutated"))
    finally:
        hooks.patch = None
    assert created["spec"]["description"] == "stamped"
    validating = [r for r in hooks.seen("/models") if r["name"] == "mutated"]
    assert validating[-1]["object"]["spec"]["description"] == "stamped"


def test_dry_run_validates_and_admits_but_stores_nothing(api: Emulator, hooks: Hooks) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    before = api.rv
    hooks.reviews.clear()
    created = admin.create(_model("dry"), dry_run=True)
    assert created["metadata"]["uid"] and "resourceVersion" not in created["metadata"]
    assert admin.find("Model", "dry") is None and api.rv == before
    assert all(r["dryRun"] is True for r in hooks.reviews) and hooks.reviews
    assert "spec.task" in _refused(
        422, admin.create, {**_model("dry"), "spec": {"task": 1}}, dry_run=True
    )
    real = admin.create(_model("dry"))
    rv = api.rv
    changed = admin.patch("Model", "dry", {"spec": {"description": "new"}}, dry_run=True)
    assert changed["spec"]["description"] == "new"
    assert changed["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]
    assert "description" not in admin.get("Model", "dry")["spec"] and api.rv == rv
    admin.delete("Model", "dry", dry_run=True)
    assert admin.find("Model", "dry") is not None and api.rv == rv
    # A webhook with side effects cannot take part in a dry run.
    deployment = {
        "apiVersion": "aiml024.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "dry"},
        "spec": {"model": "dry"},
    }
    message = _refused(400, admin.create, deployment, dry_run=True)
    assert message == 'admission webhook "deployments.test.io" does not support dry run'
    bad = httpx.post(
        f"{api.url}/apis/aiml024.io/v1alpha1/namespaces/team-b/models",
        params={"dryRun": "Some"},
        json=_model("x"),
        headers={"Authorization": "Bearer admin"},
    )
    assert bad.status_code == 400


def test_dry_run_emits_no_watch_event(api: Emulator) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    start = api.rv
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}, dry_run=True)
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w2"}})
    with httpx.stream(
        "GET",
        f"{api.url}/api/v1/namespaces/team-b/configmaps",
        params={"watch": "true", "resourceVersion": str(start), "timeoutSeconds": "1"},
        headers={"Authorization": "Bearer admin"},
    ) as stream:
        names = [json.loads(line)["object"]["metadata"]["name"] for line in stream.iter_lines()]
    assert names == ["w2"]


def test_size_limits(api: Emulator) -> None:
    admin = Client(api.url, ADMIN, "team-b")
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big"},
        "data": {"x": "y" * (3 * 1024 * 1024)},
    }
    assert _refused(413, admin.create, big) == "Request entity too large: limit is 3145728"
    noisy = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "noisy", "annotations": {f"k{i}": "v" * 1024 for i in range(300)}},
    }
    message = _refused(422, admin.create, noisy)
    assert "metadata.annotations: Too long: must have at most 262144 bytes" in message
    model = _model("annotated")
    model["metadata"]["annotations"] = {"a": "x" * (256 * 1024)}
    assert "metadata.annotations: Too long" in _refused(422, admin.create, model)


def test_rbac_refuses_with_the_api_servers_message(api: Emulator) -> None:
    alice = Client(api.url, "alice", "team-a")
    alice.create(_model("mine"))
    message = _refused(
        403, alice.patch, "Model", "mine", {"status": {"stage": "production"}}, sub="status"
    )
    assert message == (
        'models.aiml024.io "mine" is forbidden: User "alice" cannot patch resource '
        '"models/status" in API group "aiml024.io" in the namespace "team-a"'
    )
    elsewhere = Client(api.url, "alice", "team-b")
    assert _refused(403, elsewhere.list, "Model") == (
        'models.aiml024.io is forbidden: User "alice" cannot list resource "models" in API '
        'group "aiml024.io" in the namespace "team-b"'
    )
    everywhere = httpx.get(
        f"{api.url}/apis/aiml024.io/v1alpha1/models", headers={"Authorization": "Bearer alice"}
    )
    assert everywhere.status_code == 403 and "at the cluster scope" in everywhere.json()["message"]
    # What `edit` gives, as in a real cluster: pods, secrets, configmaps, Argo Workflows.
    alice.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}})
    alice.patch("Pod", "p", {"metadata": {"labels": {"a": "b"}}})
    alice.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )
    assert alice.get("Secret", "s")["data"] == {"k": "dg=="}
    assert alice.can_i("patch", "workflows", "argoproj.io")
    assert not alice.can_i("approve", "models", "aiml024.io")
    assert not alice.can_i("create", "rolebindings", "rbac.authorization.k8s.io")
    vic = Client(api.url, "vic", "team-a")
    assert vic.get("Model", "mine")["metadata"]["name"] == "mine"
    assert 'cannot get resource "secrets"' in _refused(403, vic.get, "Secret", "s")
    assert _refused(403, vic.delete, "Model", "mine").startswith(
        'models.aiml024.io "mine" is forbidden'
    )


def test_discovery_needs_authentication(api: Emulator) -> None:
    anonymous = httpx.get(f"{api.url}/apis")
    assert anonymous.status_code == 403
    assert (
        anonymous.json()["message"] == 'forbidden: User "system:anonymous" cannot get path "/apis"'
    )
    assert httpx.get(f"{api.url}/version").status_code == 200
    for path in ("/api", "/apis", "/api/v1", "/apis/aiml024.io/v1alpha1"):
        assert (
            httpx.get(f"{api.url}{path}", headers={"Authorization": "Bearer nobody"}).status_code
            == 200
        )
    assert (
        httpx.get(
            f"{api.url}/api/v1/namespaces", headers={"Authorization": "Bearer nobody"}
        ).status_code
        == 403
    )


def test_groups_from_the_registry_the_token_and_service_accounts(api: Emulator) -> None:
    assert api.authenticate("bob").groups == ("risk-officers", "system:authenticated")
    assert Client(api.url, "bob", "team-a").can_i("approve", "models", "aiml024.io")
    assert Client(api.url, "dan", "team-a", groups=["risk-officers"]).can_i(
        "approve", "models", "aiml024.io"
    )
    assert not Client(api.url, "dan", "team-a").can_i("approve", "models", "aiml024.io")
    sa = api.authenticate("system:serviceaccount:team-a:builder")
    assert sa.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:team-a",
        "system:authenticated",
    )
    api.bind("team-a", "view", service_account="team-a:builder")
    assert Client(api.url, sa.name, "team-a").list("Model")
    api.bind("team-a", "view", group="system:serviceaccounts:team-a")
    assert Client(api.url, "system:serviceaccount:team-a:other", "team-a").list("Model")


def test_operator_and_argo_have_their_cluster_roles(api: Emulator) -> None:
    operator = Client(api.url, OPERATOR_USER, "team-b")
    operator.create(_model("op"))
    operator.patch("Model", "op", {"status": {"sha256": "c" * 64}}, sub="status")
    assert _refused(403, operator.delete, "Model", "op").endswith('in the namespace "team-b"')
    argo = Client(api.url, ARGO_USER, "team-b")
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"}, "spec": {"entrypoint": "main", "templates": [{"name": "main"}]}}  # fmt: skip
    argo.create(workflow)
    argo.patch("Workflow", "wf", {"status": {"phase": "Running"}})
    assert _refused(403, operator.patch, "Workflow", "wf", {"status": {"phase": "Failed"}})


def test_subject_access_reviews(api: Emulator) -> None:
    def review(client: Client, user: str, groups: list[str], verb: str, namespace: str) -> Obj:
        return client.create(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {"group": "aiml024.io", "resource": "models", "verb": verb, "namespace": namespace, "name": "m"},
                },
            }
        )  # fmt: skip

    operator = Client(api.url, OPERATOR_USER)
    answer = review(operator, "carl", ["risk-officers"], "approve", "team-a")
    assert answer["status"]["allowed"] is True
    assert "aiml024-approver" in answer["status"]["reason"]
    assert review(operator, "carl", [], "approve", "team-a")["status"]["allowed"] is False
    assert review(operator, "carl", ["risk-officers"], "approve", "team-b")["status"] == {
        "allowed": False
    }
    assert (
        review(operator, "x", ["system:masters"], "delete", "team-b")["status"]["allowed"] is True
    )
    message = _refused(403, review, Client(api.url, "alice", "team-a"), "carl", [], "get", "team-a")
    assert message == (
        'subjectaccessreviews.authorization.k8s.io is forbidden: User "alice" cannot create '
        'resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope'
    )
    local = Client(api.url, "ada", "team-a").create(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "LocalSubjectAccessReview",
            "spec": {"user": "alice", "resourceAttributes": {"resource": "pods", "verb": "create"}},
        }
    )
    assert local["status"]["allowed"] is True and local["metadata"]["namespace"] == "team-a"


def test_rbac_objects_are_served_and_escalation_is_refused(api: Emulator) -> None:
    ada = Client(api.url, "ada", "team-a")  # admin in team-a
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "eve-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "eve", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    eve = Client(api.url, "eve", "team-a")
    assert _refused(403, eve.list, "Model")
    ada.create(binding)
    assert eve.list("Model") is not None  # the new binding applies at once
    admin_role = {
        **binding,
        "metadata": {"name": "eve-ca"},
        "roleRef": {**binding["roleRef"], "name": "cluster-admin"},
    }
    assert "attempting to grant RBAC permissions not currently held" in _refused(
        403, ada.create, admin_role
    )
    approver = {
        **binding,
        "metadata": {"name": "eve-approve"},
        "roleRef": {**binding["roleRef"], "name": "aiml024-approver"},
    }
    assert _refused(403, ada.create, approver)  # admin does not hold `approve`
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "status-writer"},
        "rules": [
            {"apiGroups": ["aiml024.io"], "resources": ["models/status"], "verbs": ["patch"]}
        ],
    }
    assert _refused(403, ada.create, role)  # ada cannot write models/status herself
    reader = {
        **role,
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": ["aiml024.io"], "resources": ["models"], "verbs": ["get"]}],
    }
    ada.create(reader)
    # A namespace admin cannot widen `view` for everyone, nor make an aggregating role.
    widen = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "sneaky", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }  # fmt: skip
    assert _refused(403, ada.create, widen)  # no RBAC rights at the cluster scope at all
    aggregating = {**widen, "metadata": {"name": "agg"}, "rules": [], "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}  # fmt: skip
    admin = Client(api.url, ADMIN)
    api.put(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "clusterrole-maker"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}],
        }
    )  # fmt: skip
    api.bind(None, "clusterrole-maker", user="ada")
    assert "not currently held" in _refused(403, ada.create, widen)  # secrets only in team-a
    assert "not currently held" in _refused(403, ada.create, aggregating)
    assert admin.create(aggregating)["metadata"]["name"] == "agg"
    moved = {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    }
    assert "cannot change roleRef" in _refused(422, ada.patch, "RoleBinding", "eve-edit", moved)
    alice = Client(api.url, "alice", "team-a")  # edit: no RBAC objects at all
    assert _refused(403, alice.create, {**binding, "metadata": {"name": "x"}})
    ada.delete("RoleBinding", "eve-edit")
    assert _refused(403, eve.list, "Model")
