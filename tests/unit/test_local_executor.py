"""The local executor runs Argo DAGs of container steps and refuses what it cannot run."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import pytest

from aiml024.local.executor import ExecutorError, LocalExecutor, check_supported

WRITE = (
    "import json,sys,pathlib; out=pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True);"
    "(out/'data.txt').write_text(sys.argv[1]);"
    "(out/'result.json').write_text(json.dumps({'wrote': sys.argv[1]}));"
    "print(json.dumps({'event': 'trial', 'number': 0}))"
)
READ = (
    "import json,sys,pathlib; data=pathlib.Path(sys.argv[1]).read_text(); out=pathlib.Path(sys.argv[3]);"
    "out.mkdir(parents=True, exist_ok=True);"
    "(out/'result.json').write_text(json.dumps({'read': data, 'upstream': json.loads(sys.argv[2])}))"
)


def workflow(**overrides: object) -> dict:
    wf = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "demo-g1"},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "aiml024-runtime",
            "arguments": {"parameters": [{"name": "greeting", "value": "hello"}]},
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {"name": "read", "template": "read", "depends": "write",
                             "arguments": {
                                 "parameters": [{"name": "upstream", "value": "{{tasks.write.outputs.parameters.result}}"}],
                                 "artifacts": [{"name": "data", "from": "{{tasks.write.outputs.artifacts.data}}"}]}},
                            {"name": "write", "template": "write"},
                        ]
                    },
                },
                {
                    "name": "write",
                    "container": {"image": "python:3.11", "command": ["python", "-c", WRITE],
                                  "args": ["{{workflow.parameters.greeting}} from {{workflow.name}}", "/aiml024/outputs"],
                                  "resources": {"limits": {"cpu": "1"}}},
                    "outputs": {
                        "parameters": [{"name": "result", "valueFrom": {"path": "/aiml024/outputs/result.json"}}],
                        "artifacts": [{"name": "data", "path": "/aiml024/outputs/data.txt"}],
                    },
                },
                {
                    "name": "read",
                    "inputs": {"parameters": [{"name": "upstream"}],
                               "artifacts": [{"name": "data", "path": "/aiml024/inputs/data"}]},
                    "container": {"image": "python:3.11", "command": ["python", "-c", READ],
                                  "args": ["{{inputs.artifacts.data.path}}", "{{inputs.parameters.upstream}}",
                                           "/aiml024/outputs"]},
                    "outputs": {"parameters": [{"name": "result", "valueFrom": {"path": "/aiml024/outputs/result.json"}}]},
                },
            ],
        },
    }  # fmt: skip
    wf.update(overrides)
    return wf


def test_runs_dag_in_dependency_order_passing_parameters_and_artifacts(tmp_path: Path) -> None:
    events = []
    run = LocalExecutor(tmp_path).run(workflow(), listener=lambda task, e: events.append((task, e)))
    assert run.phase == "Succeeded"
    assert list(run.nodes) == ["write", "read"]
    import json

    result = json.loads(run.nodes["read"].outputs["result"])
    assert result == {"read": "hello from demo-g1", "upstream": {"wrote": "hello from demo-g1"}}
    assert events == [("write", {"event": "trial", "number": 0})]
    status = run.status()
    assert status["nodes"]["read"]["phase"] == "Succeeded"


def test_parameters_override_arguments_like_argo_submit_p(tmp_path: Path) -> None:
    run = LocalExecutor(tmp_path).run(workflow(), parameters={"greeting": "hi"})
    assert '"hi from demo-g1"' in run.nodes["write"].outputs["result"]
    with pytest.raises(ExecutorError, match="unknown workflow parameter"):
        LocalExecutor(tmp_path).run(workflow(), parameters={"nope": "x"})


def test_failed_step_reports_its_error_line_and_omits_the_rest(tmp_path: Path) -> None:
    wf = workflow()
    wf["spec"]["templates"][1]["container"]["command"] = [
        "python", "-c", "import sys; print('error: target column churn not found', file=sys.stderr); sys.exit(2)",
    ]  # fmt: skip
    run = LocalExecutor(tmp_path).run(wf)
    assert run.phase == "Failed"
    assert run.nodes["write"].phase == "Failed"
    assert run.nodes["write"].message == "target column churn not found"
    assert run.nodes["read"].phase == "Omitted"
    assert "step write failed: target column churn not found" in (run.message or "")


def test_active_deadline_kills_a_silent_step(tmp_path: Path) -> None:
    wf = workflow()
    write = wf["spec"]["templates"][1]
    write["activeDeadlineSeconds"] = 1
    write["container"]["command"] = ["python", "-c", "import time; time.sleep(30)"]
    started = time.monotonic()
    run = LocalExecutor(tmp_path).run(wf)
    assert time.monotonic() - started < 15
    assert run.phase == "Failed"
    assert "activeDeadlineSeconds" in (run.nodes["write"].message or "")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda wf: wf["spec"]["templates"][1].update(script={"source": "print(1)"}), "script"),
        (
            lambda wf: wf["spec"]["templates"][0]["dag"]["tasks"][0].update(withItems=[1, 2]),
            "withItems",
        ),
        (
            lambda wf: wf["spec"]["templates"][0]["dag"]["tasks"][0].update(when="{{x}} == 1"),
            "when",
        ),
        (lambda wf: wf["spec"].update(onExit="cleanup"), "onExit"),
        (
            lambda wf: wf["spec"]["templates"][0]["dag"]["tasks"][0].update(
                depends="write.Succeeded || x"
            ),
            "depends",
        ),
        (lambda wf: wf.update(kind="CronWorkflow"), "not an Argo Workflow"),
    ],
)
def test_refuses_argo_features_it_does_not_implement(mutate, message: str) -> None:
    wf = copy.deepcopy(workflow())
    mutate(wf)
    with pytest.raises(ExecutorError, match=message):
        check_supported(wf)


def test_paths_outside_the_container_root_are_refused(tmp_path: Path) -> None:
    wf = workflow()
    wf["spec"]["templates"][1]["outputs"]["artifacts"][0]["path"] = "/tmp/data.txt"
    with pytest.raises(ExecutorError, match="outside /aiml024/"):
        LocalExecutor(tmp_path).run(wf)


def test_python_command_runs_with_this_interpreter(tmp_path: Path) -> None:
    wf = workflow()
    wf["spec"]["templates"][1]["container"]["command"] = [
        "python", "-c", WRITE.replace("json.dumps({'wrote': sys.argv[1]})", "json.dumps({'wrote': sys.executable})"),
    ]  # fmt: skip
    run = LocalExecutor(tmp_path).run(wf)
    assert run.phase == "Succeeded"
    assert sys.executable in run.nodes["write"].outputs["result"]


ITEM = (
    "import json,sys,time,pathlib; out=pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True);"
    "start=time.time(); time.sleep(1.0);"
    "(out/'result.json').write_text(json.dumps({'item': sys.argv[1], 'start': start, 'end': time.time()}));"
    "print(json.dumps({'event': 'trial', 'number': int(sys.argv[1])}))"
)


def fan_out(count: object = 3) -> dict:
    wf = workflow()
    wf["spec"]["templates"][0]["dag"]["tasks"] = [
        {"name": "write", "template": "write"},
        {"name": "workers", "template": "item", "dependencies": ["write"], "withSequence": {"count": count},
         "arguments": {"parameters": [{"name": "worker", "value": "{{item}}"}]}},
        {"name": "read", "template": "read", "dependencies": ["workers"],
         "arguments": {"parameters": [{"name": "upstream", "value": "{{tasks.write.outputs.parameters.result}}"}],
                       "artifacts": [{"name": "data", "from": "{{tasks.write.outputs.artifacts.data}}"}]}},
    ]  # fmt: skip
    wf["spec"]["templates"].append(
        {"name": "item", "inputs": {"parameters": [{"name": "worker"}]},
         "container": {"image": "python:3.11", "command": ["python", "-c", ITEM],
                       "args": ["{{inputs.parameters.worker}}", "/aiml024/outputs"]},
         "outputs": {"parameters": [{"name": "result", "valueFrom": {"path": "/aiml024/outputs/result.json"}}]}}
    )  # fmt: skip
    return wf


def test_with_sequence_runs_every_item_at_once_then_the_next_task(tmp_path: Path) -> None:
    import json

    events: list = []
    run = LocalExecutor(tmp_path).run(fan_out("3"), listener=lambda t, e: events.append((t, e)))
    assert run.phase == "Succeeded", run.message
    items = [f"workers({i}:{i})" for i in range(3)]
    assert all(run.nodes[name].phase == "Succeeded" for name in items)
    assert run.status()["nodes"]["workers"]["type"] == "TaskGroup"
    results = [json.loads(run.nodes[name].outputs["result"]) for name in items]
    assert [r["item"] for r in results] == ["0", "1", "2"]
    # In parallel: every item started before any other finished.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert sorted(e["number"] for task, e in events if task.startswith("workers")) == [0, 1, 2]
    assert run.nodes["read"].phase == "Succeeded"
    assert (tmp_path / "workers" / "2" / "outputs" / "result.json").exists()


def test_a_failed_item_fails_the_task_group_and_omits_the_rest(tmp_path: Path) -> None:
    wf = fan_out(2)
    wf["spec"]["templates"][-1]["container"]["command"] = [
        "python", "-c", "import sys; print('error: worker broke', file=sys.stderr); sys.exit(2)",
    ]  # fmt: skip
    run = LocalExecutor(tmp_path).run(wf)
    assert run.phase == "Failed" and "worker broke" in (run.message or "")
    assert run.nodes["read"].phase == "Omitted"


def test_outputs_of_a_looped_task_are_not_aggregated(tmp_path: Path) -> None:
    wf = fan_out(2)
    wf["spec"]["templates"][0]["dag"]["tasks"][2]["arguments"]["parameters"][0]["value"] = (
        "{{tasks.workers.outputs.parameters.result}}"
    )
    with pytest.raises(ExecutorError, match="unresolved expression"):
        LocalExecutor(tmp_path).run(wf)


@pytest.mark.parametrize(
    ("sequence", "message"),
    [({"count": 2, "format": "%02d"}, "format"), ({"count": "x"}, "integers"),
     ({"count": 2, "end": 3}, "exclusive")],
)  # fmt: skip
def test_with_sequence_refuses_what_it_cannot_expand(sequence: dict, message: str) -> None:
    wf = fan_out()
    wf["spec"]["templates"][0]["dag"]["tasks"][1]["withSequence"] = sequence
    with pytest.raises(ExecutorError, match=message):
        check_supported(wf)
