"""manifests/: what `kubectl apply -k manifests/` installs is valid and consistent.

The kustomization is built with `kubectl kustomize` when kubectl is installed, else with a
minimal builder covering the features it uses (resources, namespace, labels,
configMapGenerator with name suffix hashes left out, images).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.schema_validation import validate_against_crd

from aiml024.policy import PIN_FILE, load_bundle, read_pin
from aiml024.policy.engine import OPA_MANIFEST

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
K8S_VERSION = "1.33"
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}
# Kinds of prerequisites whose schemas are not in tests/upstream (checked by shape only).
CERT_MANAGER = {"Certificate", "Issuer"}


# Strategic-merge keys of the lists the patches touch (as in the Kubernetes API types).
MERGE_KEYS = {"containers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath"}


def _merge(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch, for the maps and keyed lists the kustomization patches."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {
            **base,
            **{k: _merge(base[k], v, k) if k in base else v for k, v in patch.items()},
        }
    key = MERGE_KEYS.get(field)
    if key and isinstance(base, list) and isinstance(patch, list):
        merged = list(base)
        for item in patch:
            at = next((i for i, b in enumerate(merged) if b.get(key) == item.get(key)), None)
            if at is None:
                merged.insert(0, item)  # kustomize puts patched-in items first
            else:
                merged[at] = _merge(merged[at], item)
        return merged
    return patch


def _minimal_build(root: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        docs += [d for d in yaml.safe_load_all((root / resource).read_text()) if d]
    for patch in kustomization.get("patches", []):
        change = yaml.safe_load((root / patch["path"]).read_text())
        for i, doc in enumerate(docs):
            if (doc["kind"], doc["metadata"]["name"]) == (
                change["kind"],
                change["metadata"]["name"],
            ):
                docs[i] = _merge(doc, {k: v for k, v in change.items() if k != "metadata"})
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (root / path).read_text()
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = kustomization["namespace"]
        for pairs in kustomization.get("labels", []):
            meta.setdefault("labels", {}).update(pairs["pairs"])
        for container in _containers(doc):
            image = images.get(container["image"])
            if image:
                container["image"] += f":{image['newTag']}"
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(pod.get("containers", []))


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(MANIFESTS)], check=True, capture_output=True, text=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    return _minimal_build(MANIFESTS)


def _one(built: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in built if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def test_copies_of_crds_and_policies_are_identical() -> None:
    for copy_dir, source, names in (
        (MANIFESTS / "crds", REPO / "crds", sorted(p.name for p in (REPO / "crds").glob("*.yaml"))),
        (
            MANIFESTS / "policies",
            REPO / "policies",
            sorted(
                p.name
                for p in (REPO / "policies").iterdir()
                if (p.suffix == ".rego" and not p.name.endswith("_test.rego"))
                or p.name in ("data.json", PIN_FILE, OPA_MANIFEST)
            ),
        ),
    ):
        assert sorted(p.name for p in copy_dir.iterdir()) == names, f"{copy_dir} lists differ"
        for name in names:
            assert filecmp.cmp(copy_dir / name, source / name, shallow=False), (
                f"{copy_dir / name} differs from {source / name}: cp {source / name} {copy_dir}/"
            )


def test_policy_copies_are_pinned_and_opa_gets_their_digest_as_revision() -> None:
    bundle = load_bundle(MANIFESTS / "policies")  # raises unless the copy matches its pin
    assert read_pin(MANIFESTS / "policies").bundle_digest == bundle.digest
    manifest = json.loads((MANIFESTS / "policies" / OPA_MANIFEST).read_text())
    assert manifest == {"revision": bundle.digest, "roots": ["aiml024"], "rego_version": 1}
    assert load_bundle(REPO / "policies").digest == bundle.digest


def test_every_built_in_kind_is_valid_kubernetes(built: list[dict[str, Any]]) -> None:
    for doc in built:
        if doc["kind"] in CERT_MANAGER:
            assert doc["apiVersion"] == "cert-manager.io/v1" and doc["spec"]
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {error.path}")


def test_everything_namespaced_lands_in_aiml024_system(built: list[dict[str, Any]]) -> None:
    for doc in built:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "aiml024-system", doc["metadata"]["name"]


def test_operator_runs_as_non_root_with_probes_and_limits(built: list[dict[str, Any]]) -> None:
    deployment = _one(built, "Deployment", "aiml024-operator")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == "aiml024-operator"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    policies = next(v for v in pod["volumes"] if v["name"] == "policies")
    assert (
        policies["configMap"]["name"]
        == _one(built, "ConfigMap", "aiml024-policies")["metadata"]["name"]
    )


def test_webhooks_reach_the_handlers_the_operator_registers(built: list[dict[str, Any]]) -> None:
    import kopf

    import aiml024.operator  # noqa: F401 - registers the handlers

    registered = {h.id for h in kopf.get_default_registry()._webhooks.get_all_handlers()}
    service = _one(built, "Service", "aiml024-webhook")
    paths = set()
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in _one(built, kind, "aiml024")["webhooks"]:
            ref = hook["clientConfig"]["service"]
            assert (ref["name"], ref["namespace"]) == ("aiml024-webhook", "aiml024-system")
            assert ref["port"] == service["spec"]["ports"][0]["port"]
            assert hook["failurePolicy"] == "Fail"
            paths.add(ref["path"].lstrip("/"))
    assert paths == registered


def test_user_roles_aggregate_into_the_built_in_roles(built: list[dict[str, Any]]) -> None:
    def labels(name: str) -> dict[str, str]:
        return dict(_one(built, "ClusterRole", name)["metadata"].get("labels", {}))

    assert labels("aiml024-viewer")["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert labels("aiml024-editor")["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels("aiml024-admin")["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    # Approving is a separate grant, not part of edit.
    assert not any(
        k.startswith("rbac.authorization.k8s.io/aggregate") for k in labels("aiml024-approver")
    )


def test_argo_cd_application_example_is_valid(schemas_dir: Path) -> None:
    doc = yaml.safe_load((MANIFESTS / "examples" / "argocd-application.yaml").read_text())
    assert validate_against_crd(doc, schemas_dir / "argo-cd" / "application-crd.yaml") == []
    assert doc["spec"]["source"]["path"] == "manifests"


def _pip_install(dockerfile: str) -> str:
    return next(line for line in dockerfile.splitlines() if "pip install" in line)


def test_images_share_pinned_dependencies_and_split_extras() -> None:
    operator = (REPO / "docker" / "operator.Dockerfile").read_text()
    runtime = (REPO / "docker" / "runtime.Dockerfile").read_text()
    for dockerfile in (operator, runtime):
        assert "-c constraints.txt" in _pip_install(dockerfile)
        assert "COPY constraints.txt constraints.txt" in dockerfile
        assert "USER 65532" in dockerfile
    assert _pip_install(operator).endswith('".[operator,s3]"')  # it reads run records
    assert _pip_install(runtime).endswith('".[runtime,serve,s3]"')
    pinned = (REPO / "constraints.txt").read_text()
    assert "kopf==" in pinned and "lightgbm==" in pinned


def test_the_operator_image_carries_every_policy_its_pin_names() -> None:
    """The image's default policy set must pass its own pin, or every gate would deny."""
    operator = (REPO / "docker" / "operator.Dockerfile").read_text()
    copied = {
        Path(source).name
        for line in operator.splitlines()
        if line.startswith("COPY policies/")
        for source in line.split()[1:-1]
    }
    pin = json.loads((REPO / "policies" / "policy-pin.json").read_text())
    assert {*pin["modules"], "data.json", "policy-pin.json"} <= copied


def test_operator_extra_carries_no_ml_and_runtime_no_kopf() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    if "operator" not in extras:
        pytest.xfail("pyproject.toml has no `operator` extra yet (kopf, opa-python-client)")
    assert not {"lightgbm", "torch", "xgboost", "scikit-learn"} & {
        _name(d) for d in extras["operator"]
    }
    for extra in ("runtime", "serve", "s3"):
        assert "kopf" not in {_name(d) for d in extras[extra]}


def _name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


# --- OPA, locked down ---------------------------------------------------------------------


def _opa_pod(built: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(_one(built, "Deployment", "aiml024-opa")["spec"]["template"]["spec"])


def test_opa_image_is_pinned_by_version(built: list[dict[str, Any]]) -> None:
    image = _opa_pod(built)["containers"][0]["image"]
    name, _, tag = image.rpartition(":")
    assert name == "openpolicyagent/opa"
    assert tag and tag != "latest" and tag[0].isdigit(), image
    raw = yaml.safe_load_all((MANIFESTS / "opa.yaml").read_text())
    assert (
        next(d for d in raw if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][
            0
        ]["image"]
        == image
    ), "opa.yaml and kustomization.yaml pin different OPA versions"


def test_opa_serves_bundles_behind_token_authentication(built: list[dict[str, Any]]) -> None:
    pod = _opa_pod(built)
    container = pod["containers"][0]
    args = container["args"]
    assert args[:2] == ["run", "--server"]
    assert {"--authentication=token", "--authorization=basic"} <= set(args)
    bundles = args[args.index("--bundle") + 1 :]
    assert bundles == ["/bundles/aiml024", "/bundles/authz"]
    assert not any(a.startswith(("--set", "--config-file", "-w", "--watch")) for a in args)
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    assert all("hostPort" not in p for p in container["ports"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = _one(built, "Service", "aiml024-opa")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert all("nodePort" not in p for p in service["spec"]["ports"])


def test_every_bundle_file_is_mounted_into_opa(built: list[dict[str, Any]]) -> None:
    pod = _opa_pod(built)
    mounts = pod["containers"][0]["volumeMounts"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"]}
    for prefix, config_map, skipped in (
        ("/bundles/aiml024", "aiml024-policies", {PIN_FILE}),
        ("/bundles/authz", "aiml024-opa-authz", set()),
    ):
        data = _one(built, "ConfigMap", config_map)
        keys = set(data["data"]) - skipped
        mounted = {
            m["subPath"]: m["mountPath"]
            for m in mounts
            if volumes.get(m["name"]) == data["metadata"]["name"]
        }
        assert set(mounted) == keys, f"mount every key of {config_map} with subPath"
        assert all(path == f"{prefix}/{key}" for key, path in mounted.items())
        assert all(m.get("readOnly") for m in mounts)
    manifests = {
        name: json.loads(_one(built, "ConfigMap", name)["data"][OPA_MANIFEST])
        for name in ("aiml024-policies", "aiml024-opa-authz")
    }
    assert manifests["aiml024-policies"]["roots"] == ["aiml024"]
    assert manifests["aiml024-opa-authz"]["roots"] == ["system/authz"]


def test_only_the_operator_reaches_opa(built: list[dict[str, Any]]) -> None:
    policies = [d for d in built if d["kind"] == "NetworkPolicy"]
    opa_labels = _opa_pod(built)
    opa_pod_labels = _one(built, "Deployment", "aiml024-opa")["spec"]["template"]["metadata"][
        "labels"
    ]
    operator_labels = _one(built, "Deployment", "aiml024-operator")["spec"]["template"]["metadata"][
        "labels"
    ]
    selecting = [
        p
        for p in policies
        if p["spec"]["podSelector"]["matchLabels"].items() <= opa_pod_labels.items()
    ]
    assert len(selecting) == 1, "exactly one NetworkPolicy selects OPA's pods"
    spec = selecting[0]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= operator_labels.items()
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "aiml024-system"
    }
    port = opa_labels["containers"][0]["ports"][0]["containerPort"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_opa_and_the_operator_share_the_token_secret(built: list[dict[str, Any]]) -> None:
    opa_env = {e["name"]: e for e in _opa_pod(built)["containers"][0]["env"]}
    ref = opa_env["AIML024_OPA_TOKEN"]["valueFrom"]["secretKeyRef"]
    pod = _one(built, "Deployment", "aiml024-operator")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    token_file = Path(env["AIML024_OPA_TOKEN_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == ref["name"] == "aiml024-opa-token"
    assert volume["secret"]["items"] == [{"key": ref["key"], "path": token_file.name}]
    assert env["AIML024_OPA_URL"].startswith("http://aiml024-opa.aiml024-system.svc:")
    # The Secret itself is created at install time, never committed.
    assert not any(d["kind"] == "Secret" for d in built)


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl to compare with")
def test_minimal_builder_agrees_with_kustomize_on_workloads(built: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    generated = {g["name"] for g in kustomization.get("configMapGenerator", [])}

    def pods(docs: list[dict[str, Any]], hashed: bool) -> dict[str, Any]:
        found = {}
        for doc in docs:
            if doc["kind"] == "Deployment":
                spec = json.loads(json.dumps(doc["spec"]["template"]["spec"]))
                for volume in spec.get("volumes", []):
                    name = volume.get("configMap", {}).get("name", "")
                    if hashed and name.rsplit("-", 1)[0] in generated:  # kustomize's hash suffix
                        volume["configMap"]["name"] = name.rsplit("-", 1)[0]
                found[doc["metadata"]["name"]] = spec
        return found

    assert pods(_minimal_build(MANIFESTS), hashed=False) == pods(built, hashed=True)
