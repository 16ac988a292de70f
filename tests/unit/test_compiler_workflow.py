"""Experiment -> Argo Workflow: the shape docs/CONTRACTS.md promises the runtime and executor."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES

from aiml024.api import Experiment, parse_object
from aiml024.api import step_params as typed_params
from aiml024.api.data_steps import IngestResult, ValidateResult
from aiml024.api.step_params import PARAMS, RESULTS, STEPS, SearchParams, StepParams
from aiml024.api.steps import EvaluateResult, SearchResult
from aiml024.compiler import CompileError, CompileOptions, compile_experiment
from aiml024.compiler import workflow as workflow_module


def experiment(spec: dict[str, Any] | None = None, **metadata: Any) -> Experiment:
    document = yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())
    document["metadata"] |= metadata
    document["spec"] |= spec or {}
    obj = parse_object(document)
    assert isinstance(obj, Experiment)
    return obj


def unchecked(spec: dict[str, Any]) -> Experiment:
    """An Experiment as a program may build it, without parse_object's refusal of the fields
    the platform does not implement yet (api.support)."""
    document = yaml.safe_load((EXAMPLES / "churn" / "experiment.yaml").read_text())
    document["spec"] |= spec
    return Experiment.model_validate(document)


def templates(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in workflow["spec"]["templates"]}


def dag_tasks(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in templates(workflow)["automl"]["dag"]["tasks"]}


def substitute(text: str, values: dict[str, str]) -> str:
    """Argo's single-pass `{{...}}` substitution, as the local executor does it."""
    return re.sub(r"\{\{([^{}]+)\}\}", lambda m: values[m.group(1).strip()], text)


class TestDag:
    def test_runs_the_five_steps_in_order(self) -> None:
        tasks = dag_tasks(compile_experiment(experiment()))
        assert list(tasks) == list(STEPS)
        assert "dependencies" not in tasks["ingest"]
        for before, after in zip(STEPS, STEPS[1:], strict=False):
            assert tasks[after]["dependencies"] == [before]

    def test_entrypoint_account_and_parameters(self) -> None:
        exp = experiment()
        wf = compile_experiment(exp, CompileOptions(study_storage="postgresql://optuna@db/x"))
        assert wf["spec"]["entrypoint"] == "automl"
        assert wf["spec"]["serviceAccountName"] == "aiml024-runtime"
        params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
        assert params["experiment"] == "churn"
        assert json.loads(params["spec"]) == exp.spec.wire()
        assert params["spec"] == json.dumps(exp.spec.wire(), sort_keys=True, separators=(",", ":"))
        assert params["artifact-store"] == "s3://aiml024-artifacts"
        assert params["study-storage"] == "postgresql://optuna@db/x"
        assert all(isinstance(v, str) for v in params.values())

    def test_artifacts_flow_from_producer_to_consumer(self) -> None:
        wf = compile_experiment(experiment())
        tasks, by_name = dag_tasks(wf), templates(wf)
        produced = {
            a["name"]: step for step in STEPS for a in by_name[step]["outputs"].get("artifacts", [])
        }
        assert set(produced) == {"dataset", "clean", "report", "search", "bundle", "card"}
        consumed = {
            "validate": ["dataset"],
            "search": ["clean"],
            "evaluate": ["clean", "search"],
            "register": ["bundle", "card"],
        }
        for step, names in consumed.items():
            args = tasks[step]["arguments"]["artifacts"]
            assert [a["name"] for a in args] == names
            for arg in args:
                assert arg["from"] == (
                    f"{{{{tasks.{produced[arg['name']]}.outputs.artifacts.{arg['name']}}}}}"
                )
            inputs = by_name[step]["inputs"]["artifacts"]
            assert inputs == [{"name": n, "path": f"/aiml024/inputs/{n}"} for n in names]
        for step in STEPS:
            for out in by_name[step]["outputs"].get("artifacts", []):
                assert out["path"] == f"/aiml024/outputs/{out['name']}"

    def test_every_step_exposes_result_json(self) -> None:
        by_name = templates(compile_experiment(experiment()))
        for step in STEPS:
            assert by_name[step]["outputs"]["parameters"] == [
                {"name": "result", "valueFrom": {"path": "/aiml024/outputs/result.json"}}
            ]


class TestContainers:
    def test_command_and_args(self) -> None:
        by_name = templates(compile_experiment(experiment(), CompileOptions(image="img:1")))
        for step in STEPS:
            container = by_name[step]["container"]
            assert container["image"] == "img:1"
            assert container["command"] == ["python", "-m", "aiml024.runtime", step]
            args = container["args"]
            assert args[0] == "--params" and args[2:] == [
                "--inputs",
                "/aiml024/inputs",
                "--outputs",
                "/aiml024/outputs",
            ]
            assert "imagePullPolicy" not in container

    def test_params_become_valid_json_after_substitution(self) -> None:
        exp = experiment()
        wf = compile_experiment(exp)
        tasks, by_name = dag_tasks(wf), templates(wf)
        results = {step: {"step": step, "nested": {"list": [1, 2.5, None]}} for step in STEPS}
        values = {
            f"workflow.parameters.{p['name']}": p["value"]
            for p in wf["spec"]["arguments"]["parameters"]
        }
        values["workflow.name"] = wf["metadata"]["name"]
        values |= {
            f"tasks.{s}.outputs.parameters.result": json.dumps(r) for s, r in results.items()
        }
        for index, step in enumerate(STEPS):
            inputs = {
                f"inputs.parameters.{p['name']}": substitute(p["value"], values)
                for p in tasks[step].get("arguments", {}).get("parameters", [])
            }
            params = json.loads(substitute(by_name[step]["container"]["args"][1], values | inputs))
            assert params == {
                "experiment": "churn",
                "namespace": "default",
                "experimentUid": "",  # unknown until the API server stores the Experiment
                "spec": exp.spec.wire(),
                "artifactStore": "s3://aiml024-artifacts",
                "studyStorage": "",
                "codeVersion": CompileOptions().code_version,
                "workflow": "churn-g1",
                **{earlier: results[earlier] for earlier in STEPS[:index]},
            }

    def test_resources_come_from_the_spec(self) -> None:
        exp = experiment({"resources": {"cpu": "500m", "memory": "1Gi"}})
        for step, template in templates(compile_experiment(exp)).items():
            if step == "automl":
                continue
            assert template["container"]["resources"] == {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "1Gi"},
            }

    def test_gpu_node_selector_and_tolerations_only_on_search(self) -> None:
        """resources.gpu is refused for now (api.support); the template keeps its place."""
        exp = unchecked(
            {
                "resources": {
                    "gpu": 2,
                    "nodeSelector": {"pool": "gpu", "accelerator": "a100"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                }
            }
        )
        with pytest.raises(CompileError, match="not supported yet: spec.resources.gpu"):
            compile_experiment(exp)
        by_name = templates(workflow_module.compile_experiment(exp))
        search = by_name["search"]
        assert search["container"]["resources"]["limits"]["nvidia.com/gpu"] == 2
        assert search["nodeSelector"] == {"accelerator": "a100", "pool": "gpu"}
        assert search["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        for step in ("ingest", "validate", "evaluate", "register"):
            assert "nvidia.com/gpu" not in by_name[step]["container"]["resources"]["limits"]
            assert "nodeSelector" not in by_name[step] and "tolerations" not in by_name[step]

    def test_no_gpu_fields_when_not_asked(self) -> None:
        search = templates(compile_experiment(experiment()))["search"]
        assert "nvidia.com/gpu" not in search["container"]["resources"]["limits"]
        assert "nodeSelector" not in search and "tolerations" not in search

    def test_search_deadline_is_generous_and_only_ingest_retries(self) -> None:
        by_name = templates(compile_experiment(experiment({"search": {"timeBudgetSeconds": 600}})))
        assert by_name["search"]["activeDeadlineSeconds"] >= 2 * 600
        assert by_name["ingest"]["retryStrategy"]["limit"] == 1
        assert [s for s in STEPS if "retryStrategy" in by_name[s]] == ["ingest"]

    def test_image_pull_policy_when_set(self) -> None:
        options = CompileOptions(image_pull_policy="IfNotPresent")
        for step in STEPS:
            container = templates(compile_experiment(experiment(), options))[step]["container"]
            assert container["imagePullPolicy"] == "IfNotPresent"


class TestNamesAndDeterminism:
    def test_name_labels_and_namespace_from_generation(self) -> None:
        wf = compile_experiment(experiment(generation=7, namespace="ml"))
        assert wf["metadata"]["name"] == "churn-g7"
        assert wf["metadata"]["namespace"] == "ml"
        assert wf["metadata"]["labels"] == {
            "aiml024.io/experiment": "churn",
            "aiml024.io/generation": "7",
            "app.kubernetes.io/managed-by": "aiml024",
        }

    def test_generation_defaults_to_one_and_namespace_is_optional(self) -> None:
        wf = compile_experiment(experiment())
        assert wf["metadata"]["name"] == "churn-g1"
        assert "namespace" not in wf["metadata"]

    def test_long_names_stay_within_63_characters(self) -> None:
        long = "a" * 63
        first = compile_experiment(experiment(name=long, generation=12345))["metadata"]["name"]
        assert len(first) <= 63 and first.endswith("-g12345")
        again = compile_experiment(experiment(name=long, generation=12345))["metadata"]["name"]
        assert first == again

    def test_same_input_gives_byte_identical_output(self) -> None:
        first = yaml.safe_dump(compile_experiment(experiment()), sort_keys=False)
        second = yaml.safe_dump(compile_experiment(experiment()), sort_keys=False)
        assert first == second

    def test_output_does_not_depend_on_hash_seed_or_process(self) -> None:
        code = (
            "import json,yaml;from aiml024.api import parse_object;"
            "from aiml024.compiler import compile_experiment;"
            "d=yaml.safe_load(open('examples/churn/experiment.yaml'));"
            "print(json.dumps(compile_experiment(parse_object(d))))"
        )
        runs = {
            subprocess.run(
                [sys.executable, "-c", code],
                cwd=EXAMPLES.parent,
                env={"PYTHONHASHSEED": seed, "AIML024_IMAGE": "ignored:latest"},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for seed in ("1", "2")
        }
        assert len(runs) == 1
        here = json.dumps(compile_experiment(experiment(name="churn")))
        assert runs == {here + "\n"}


class TestRefusals:
    @pytest.mark.parametrize("task", ["forecasting", "anomaly", "image-classification"])
    def test_unsupported_task_is_refused_naming_spec_task(self, task: str) -> None:
        exp = unchecked({"task": task, "objective": None})
        with pytest.raises(CompileError, match=rf"not supported yet: spec\.task={task}"):
            compile_experiment(exp)
        with pytest.raises(CompileError, match=rf"spec\.task: {task} is not supported"):
            workflow_module.compile_experiment(exp)

    def test_compile_error_is_a_value_error(self) -> None:
        assert issubclass(CompileError, ValueError)

    @pytest.mark.parametrize("value", ['s3://a"b', "s3://a\\b", "s3://a\nb"])
    def test_options_that_would_break_the_params_json_are_refused(self, value: str) -> None:
        with pytest.raises(CompileError, match="options.artifact_store"):
            CompileOptions(artifact_store=value)


class TestDistributedSearch:
    def test_parallelism_fans_out_workers_then_merges_into_the_search_task(self) -> None:
        wf = compile_experiment(experiment({"search": {"parallelism": 3}}))
        tasks, by_name = dag_tasks(wf), templates(wf)
        assert list(tasks) == ["ingest", "validate", "search-workers", "search", "evaluate",
                               "register"]  # fmt: skip
        workers = tasks["search-workers"]
        assert workers["template"] == "search-worker"
        assert workers["withSequence"] == {"count": "3"}
        assert workers["dependencies"] == ["validate"]
        assert {"name": "worker", "value": "{{item}}"} in workers["arguments"]["parameters"]
        assert tasks["search"]["dependencies"] == ["search-workers"]
        assert tasks["evaluate"]["dependencies"] == ["search"]
        # Workers write no artifact; the merge produces the search artifact evaluate reads.
        assert "artifacts" not in by_name["search-worker"]["outputs"]
        assert by_name["search"]["outputs"]["artifacts"] == [
            {"name": "search", "path": "/aiml024/outputs/search"}
        ]

    def test_worker_and_merge_params_after_substitution(self) -> None:
        exp = experiment({"search": {"parallelism": 2}})
        wf = compile_experiment(exp, CompileOptions(study_storage="postgresql://optuna@db/s"))
        by_name = templates(wf)
        values = {
            f"workflow.parameters.{p['name']}": p["value"]
            for p in wf["spec"]["arguments"]["parameters"]
        }
        values |= {
            "workflow.name": "churn-g1",
            "inputs.parameters.ingest": "{}",
            "inputs.parameters.validate": "{}",
            "inputs.parameters.worker": "1",
        }
        worker = json.loads(substitute(by_name["search-worker"]["container"]["args"][1], values))
        merge = json.loads(substitute(by_name["search"]["container"]["args"][1], values))
        assert worker["worker"] == 1 and "merge" not in worker
        assert merge["merge"] is True and "worker" not in merge
        assert worker["studyStorage"] == merge["studyStorage"] == "postgresql://optuna@db/s"
        assert worker["workflow"] == merge["workflow"] == "churn-g1"

    def test_gpu_and_scheduling_go_to_the_workers_not_the_merge(self) -> None:
        exp = unchecked(
            {"search": {"parallelism": 2}, "resources": {"gpu": 1, "nodeSelector": {"p": "gpu"}}}
        )
        by_name = templates(workflow_module.compile_experiment(exp))
        assert by_name["search-worker"]["container"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert by_name["search-worker"]["nodeSelector"] == {"p": "gpu"}
        assert "nvidia.com/gpu" not in by_name["search"]["container"]["resources"]["limits"]
        assert "nodeSelector" not in by_name["search"]

    def test_parallelism_one_keeps_the_plain_dag(self) -> None:
        tasks = dag_tasks(compile_experiment(experiment({"search": {"parallelism": 1}})))
        assert list(tasks) == list(STEPS)

    def test_validates_against_the_upstream_argo_crd_and_the_local_executor_accepts_it(
        self, schemas_dir: Any
    ) -> None:
        from tests.schema_validation import validate_upstream

        from aiml024.local.executor import check_supported, sequence

        wf = compile_experiment(experiment({"search": {"parallelism": 4}}))
        assert validate_upstream(wf, schemas_dir) == []
        check_supported(wf)
        assert sequence(dag_tasks(wf)["search-workers"]) == ["0", "1", "2", "3"]


# One result of each step, as each step writes it (through its model, camelCase, no nulls).
RESULTS_WRITTEN: dict[str, dict[str, Any]] = {
    "ingest": IngestResult(
        uri="s3://data/churn.csv", rows=10, columns=["a", "churned"],
        types={"a": "numeric", "churned": "categorical"}, fingerprint="0" * 64,
    ).wire(),
    "validate": ValidateResult(rows=10, dropped_rows=0, types={"a": "numeric"}).wire(),
    "search": SearchResult.model_validate(
        {"trialsCompleted": 1, "trialsTotal": 1, "metric": "maximize_auc", "bestValue": 0.9,
         "bestTrial": {"number": 0, "learner": "lightgbm", "value": 0.9}, "leaderboard": [],
         "elapsedSeconds": 1.0, "trainRows": 8, "holdoutRows": 2}
    ).wire(),
    "evaluate": EvaluateResult(
        metrics={"auc": 0.9}, baseline_metrics={"auc": 0.8}, primary_metric="auc",
        sha256="0" * 64, learner="lightgbm", card_complete=True, holdout_rows=2,
    ).wire(),
}  # fmt: skip


def step_documents(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each container template's --params once Argo substituted it, with written results."""
    values = {f"workflow.parameters.{p['name']}": p["value"]
              for p in wf["spec"]["arguments"]["parameters"]}  # fmt: skip
    values |= {"workflow.name": wf["metadata"]["name"], "inputs.parameters.worker": "1"}
    values |= {f"inputs.parameters.{s}": json.dumps(r) for s, r in RESULTS_WRITTEN.items()}
    return {
        name: json.loads(substitute(template["container"]["args"][1], values))
        for name, template in templates(wf).items()
        if "container" in template
    }


class TestTypedParams:
    """The --params of every step is its model in aiml024.api.step_params, both ways."""

    def test_one_owner_of_the_step_list(self) -> None:
        assert workflow_module.STEPS is typed_params.STEPS
        assert list(PARAMS) == list(STEPS) and list(RESULTS) == list(STEPS)
        runtime_main = (EXAMPLES.parent / "src/aiml024/runtime/__main__.py").read_text()
        assert "from aiml024.api.step_params import STEPS" in runtime_main

    def test_each_model_reads_the_results_of_the_steps_before_it(self) -> None:
        for step in STEPS:
            keys = {f.alias or n for n, f in PARAMS[step].model_fields.items()}
            assert keys & set(STEPS) == set(STEPS[: STEPS.index(step)]), step
            for earlier in STEPS[: STEPS.index(step)]:
                field = next(f for f in PARAMS[step].model_fields.values() if f.alias == earlier)
                assert field.annotation is RESULTS[earlier], (step, earlier)

    @pytest.mark.parametrize("parallelism", [1, 3])
    def test_the_substituted_params_parse_with_the_steps_model(self, parallelism: int) -> None:
        exp = experiment({"search": {"parallelism": parallelism}}, uid="u-1", namespace="ml")
        documents = step_documents(compile_experiment(exp))
        for name, document in documents.items():
            step = "search" if name == "search-worker" else name
            params = PARAMS[step].model_validate(document)  # type: ignore[index]
            assert params.spec == exp.spec and params.experiment_uid == "u-1"
            assert params.workflow == "churn-g1" and params.namespace == "ml"
            assert StepParams.model_fields.keys() <= set(type(params).model_fields)
            assert PARAMS[step].unwritten_fields(document) == []  # type: ignore[index]
        if parallelism > 1:
            worker = SearchParams.model_validate(documents["search-worker"])
            merge = SearchParams.model_validate(documents["search"])
            assert (worker.worker, worker.merge) == (1, False)
            assert (merge.worker, merge.merge) == (None, True)

    def test_a_model_field_without_an_argo_source_fails_the_compile(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class Extended(typed_params.IngestParams):
            region: str

        monkeypatch.setitem(PARAMS, "ingest", Extended)
        with pytest.raises(CompileError, match="ingest params: no Argo .* supplies 'region'"):
            compile_experiment(experiment())


@pytest.mark.parametrize(
    ("uri", "refused"),
    [
        ("s3://team-data/churn.csv", None),
        ("https://example.org/churn.csv", None),
        ("s3://aiml024-artifacts/ml/exports/churn.parquet", None),  # its own namespace's part
        ("/var/run/secrets/kubernetes.io/serviceaccount/token", "is not object storage"),
        ("file:///etc/passwd", "is not object storage"),
        ("http://169.254.169.254/latest/meta-data/", "is not object storage"),
        ("simplecache::s3://team-data/churn.csv", "is not object storage"),
        ("s3://aiml024-artifacts/other-team/churn/uid/run/bundle/x", "another namespace"),
    ],
)
def test_in_a_cluster_the_steps_read_only_remote_data_of_their_namespace(
    uri: str, refused: str | None
) -> None:
    """The steps read spec.data.uri with the runtime's identity: a pod-local path (its token),
    the metadata endpoint or another namespace's run roots would leak through the run."""
    from aiml024.compiler import cluster_data_problem

    exp = experiment({"data": {"uri": uri}}, namespace="ml")
    problem = cluster_data_problem(exp, CompileOptions(artifact_store="s3://aiml024-artifacts"))
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem and problem.startswith("spec.data.uri")
    # One machine (a local store): local files are the user's own.
    assert cluster_data_problem(exp, CompileOptions(artifact_store="file:///srv/store")) is None


def test_the_operator_refuses_pod_local_data_at_admission() -> None:
    import kopf

    from aiml024.operator.admission import validate_experiment
    from aiml024.operator.config import OperatorConfig

    config = OperatorConfig(compile=CompileOptions(artifact_store="s3://aiml024-artifacts"))
    body = experiment({"data": {"uri": "/var/run/secrets/kubernetes.io/serviceaccount/token"}})
    with pytest.raises(kopf.AdmissionError, match="spec.data.uri"):
        validate_experiment(config, body.wire(), None)


def test_in_a_cluster_the_register_step_gets_the_card_signing_key_from_a_secret(
    schemas_dir: Any,
) -> None:
    """Only the register step mounts it, read-only; one machine compiles no mount at all."""
    from tests.schema_validation import validate_upstream

    options = CompileOptions(card_key_secret="aiml024-card-signing-key")
    wf = compile_experiment(experiment(), options)
    mounted = [t["name"] for t in wf["spec"]["templates"] if t.get("volumes")]
    assert mounted == ["register"]
    register = next(t for t in wf["spec"]["templates"] if t["name"] == "register")
    assert register["volumes"] == [{"name": "card-key", "secret": {
        "secretName": "aiml024-card-signing-key", "defaultMode": 0o400}}]  # fmt: skip
    assert register["container"]["volumeMounts"][0]["readOnly"] is True
    assert {"name": "AIML024_CARD_KEY_FILE", "value": "/var/run/aiml024/card-key/key.pem"} in (
        register["container"]["env"]
    )
    assert validate_upstream(wf, schemas_dir) == []
    local = compile_experiment(experiment())
    assert not any(t.get("volumes") or "env" in t.get("container", {})
                   for t in local["spec"]["templates"])  # fmt: skip
