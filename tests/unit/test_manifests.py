"""manifests/: what `kubectl apply -k manifests/` installs is valid and consistent.

The kustomization is built with `kubectl kustomize` when kubectl is installed, else with a
minimal builder covering the features it uses (resources, namespace, labels,
configMapGenerator with name suffix hashes left out, images).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.schema_validation import validate_against_crd

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
# Kinds of prerequisites whose schemas are not in ../shared/schemas (checked by shape only).
CERT_MANAGER = {"Certificate", "Issuer"}


def _minimal_build(root: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        docs += [d for d in yaml.safe_load_all((root / resource).read_text()) if d]
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (root / f).read_text() for f in generator["files"]}
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
                or p.name == "data.json"
            ),
        ),
    ):
        assert sorted(p.name for p in copy_dir.iterdir()) == names, f"{copy_dir} lists differ"
        for name in names:
            assert filecmp.cmp(copy_dir / name, source / name, shallow=False), (
                f"{copy_dir / name} differs from {source / name}: cp {source / name} {copy_dir}/"
            )


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
    assert _pip_install(operator).endswith('".[operator]"')
    assert _pip_install(runtime).endswith('".[runtime,serve,s3]"')
    pinned = (REPO / "constraints.txt").read_text()
    assert "kopf==" in pinned and "lightgbm==" in pinned


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
