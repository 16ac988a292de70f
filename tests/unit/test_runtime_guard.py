"""manifests/runtime-guard.yaml: no namespace user runs code as aiml024-runtime.

The emulator does not run ValidatingAdmissionPolicies, so each policy's variables and
validations are evaluated here with the same CEL evaluator (cel-python) on the requests an
attacker with the `edit` role would send, as the API server would bind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes
from tests.integration.emulator import cel

GUARD = Path(__file__).resolve().parents[2] / "manifests" / "runtime-guard.yaml"
RUNTIME = "aiml024-runtime"
EDITOR = "mallory"
ARGO = "system:serviceaccount:argo:argo"
OPERATOR = "system:serviceaccount:aiml024-system:aiml024-operator"


def policy(name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(GUARD.read_text()):
        if doc["kind"] == "ValidatingAdmissionPolicy" and doc["metadata"]["name"] == name:
            return dict(doc["spec"])
    raise AssertionError(f"no policy {name} in {GUARD}")


def refusals(
    spec: dict[str, Any],
    user: str,
    operation: str,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None = None,
    name: str = "",
) -> list[str]:
    """The messages of the validations that fail, as the API server evaluates the policy."""
    request = {"operation": operation, "name": name, "userInfo": {"username": user}}
    bound: dict[str, Any] = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel(request),
    }
    variables: dict[Any, Any] = {}
    for variable in spec.get("variables", []):
        bound["variables"] = celtypes.MapType(variables)
        value = cel.evaluate(variable["expression"], **bound)
        assert not isinstance(value, Exception), f"{variable['name']}: {value}"
        variables[celtypes.StringType(variable["name"])] = value
    bound["variables"] = celtypes.MapType(variables)
    failed = []
    for validation in spec["validations"]:
        result = cel.evaluate(validation["expression"], **bound)
        assert isinstance(result, bool | celtypes.BoolType), f"{validation['expression']}: {result}"
        if not result:
            failed.append(" ".join(validation["message"].split()))
    return failed


def pod(**spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [], **spec}}


def workflow(**spec: Any) -> dict[str, Any]:
    return {"kind": "Workflow", "metadata": {"name": "w"},
            "spec": {"entrypoint": "main", "templates": [{"name": "main"}], **spec}}  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [{"serviceAccountName": RUNTIME}, {"serviceAccount": RUNTIME}],
    ids=["serviceAccountName", "the old serviceAccount field"],
)
def test_an_editor_cannot_run_a_pod_as_the_runtime(spec: dict[str, Any]) -> None:
    identity = policy("aiml024-runtime-identity")
    assert refusals(identity, EDITOR, "CREATE", pod(**spec)) == [
        "only the Argo workflow controller may run Pods as aiml024-runtime"
    ]
    assert refusals(identity, ARGO, "CREATE", pod(**spec)) == []
    assert refusals(identity, EDITOR, "CREATE", pod(serviceAccountName="default")) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"serviceAccountName": RUNTIME},
        {"executor": {"serviceAccountName": RUNTIME}},
        {"podSpecPatch": '{"serviceAccountName": "aiml024-runtime"}'},
        {"templates": [{"name": "main", "serviceAccountName": RUNTIME}]},
        {"templates": [{"name": "main", "executor": {"serviceAccountName": RUNTIME}}]},
        {"templates": [{"name": "main", "podSpecPatch": "serviceAccountName: aiml024-runtime"}]},
    ],
    ids=["workflow", "executor", "podSpecPatch", "template", "template executor",
         "template podSpecPatch"],  # fmt: skip
)
def test_an_editor_cannot_run_a_workflow_as_the_runtime(spec: dict[str, Any]) -> None:
    identity = policy("aiml024-runtime-identity")
    refused = refusals(identity, EDITOR, "CREATE", workflow(**spec))
    assert len(refused) == 1 and refused[0].startswith("only the aiml024 operator creates")
    assert refusals(identity, OPERATOR, "CREATE", workflow(**spec)) == []
    # The operator's Workflow: an editor may write its status, never change its spec.
    mine = workflow(**spec)
    assert refusals(identity, EDITOR, "UPDATE", {**mine, "status": {"phase": "Running"}}, mine) == []
    changed = {**mine, "spec": {**mine["spec"], "entrypoint": "evil"}}
    assert len(refusals(identity, EDITOR, "UPDATE", changed, mine)) == 1


def test_only_an_operators_cronworkflow_makes_the_argo_controller_run_the_runtime() -> None:
    """A drift monitor: the operator creates the CronWorkflow, the Argo controller creates its
    Workflows (owned by it) on schedule. Nobody else gets either."""
    identity = policy("aiml024-runtime-identity")
    cron = {"kind": "CronWorkflow", "metadata": {"name": "churn-drift"},
            "spec": {"schedules": ["0 * * * *"], "workflowSpec": {
                "entrypoint": "monitor", "serviceAccountName": RUNTIME,
                "templates": [{"name": "monitor"}]}}}  # fmt: skip
    assert refusals(identity, OPERATOR, "CREATE", cron) == []
    assert len(refusals(identity, EDITOR, "CREATE", cron)) == 1
    spawned = workflow(serviceAccountName=RUNTIME)
    spawned["metadata"]["ownerReferences"] = [{"kind": "CronWorkflow", "name": "churn-drift"}]
    assert refusals(identity, ARGO, "CREATE", spawned) == []
    # An editor cannot pass their Workflow off as the CronWorkflow's, nor can the controller
    # run one that no CronWorkflow owns.
    assert len(refusals(identity, EDITOR, "CREATE", spawned)) == 1
    assert len(refusals(identity, ARGO, "CREATE", workflow(serviceAccountName=RUNTIME))) == 1


def test_an_editors_own_workflow_is_theirs() -> None:
    identity = policy("aiml024-runtime-identity")
    assert refusals(identity, EDITOR, "CREATE", workflow(serviceAccountName="default")) == []
    assert refusals(identity, EDITOR, "CREATE", workflow(podSpecPatch='{"priority": 1}')) == []


def test_nobody_execs_into_or_debugs_a_training_step() -> None:
    pods = policy("aiml024-runtime-pods")
    steps = ("churn-g2-evaluate-3612214843", "churn-g1-search-worker-17",
             "churn-drift-drift-1764576000-monitor-2291847712")  # fmt: skip
    for step in steps:
        assert refusals(pods, EDITOR, "CONNECT", {"kind": "PodExecOptions"}, name=step) == [
            "a training step's or drift monitor's Pod cannot be exec'd into, attached to or "
            "port-forwarded (it writes evidence as aiml024-runtime); read its logs instead"
        ]
    assert refusals(pods, EDITOR, "CONNECT", {"kind": "PodExecOptions"}, name="my-notebook") == []
    runtime_pod = pod(serviceAccountName=RUNTIME)
    debugged = pod(serviceAccountName=RUNTIME, ephemeralContainers=[{"name": "debug"}])
    assert refusals(pods, EDITOR, "UPDATE", debugged, runtime_pod, name="x") == [
        "no debug container can be added to a Pod that runs as aiml024-runtime"
    ]
    own = pod(serviceAccountName="default")
    assert refusals(pods, EDITOR, "UPDATE", own, own, name="x") == []
