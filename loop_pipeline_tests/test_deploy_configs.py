"""configs/deploy/ as configuration a test validates (docs/deploy.md): every file loads with its model;
the instance against Dagster's own instance schema and K8sRunLauncher's config schema, the executor
against dagster-k8s's k8s_job_executor schema and the project's asset steps, the manifests against the
Kubernetes API models, the router's ConfigMap with RouterSettings and against vLLM, MLflow's arguments
with MLflow's own parser, and every variable against docs/deploy.md. A broken value fails naming the
file, the object and the field. No cluster, no network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from typer.testing import CliRunner

from loop_pipeline.config import ConfigError
from loop_pipeline.deploy import DeployFile, ExecutorFile, InstanceFile, ManifestFile, build_executor
from loop_pipeline.deploy.bundle import cross_file_problems, read_documented, undocumented
from loop_pipeline.resources.trainer import K8sDeployFile
from loop_pipeline.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "configs" / "deploy"
DOC = REPO_ROOT / "docs" / "deploy.md"
MODELS = {
    "dagster.yaml": InstanceFile,
    "executor.yaml": ExecutorFile,
    "k8s-training.yaml": K8sDeployFile,
    "dagster-k8s.yaml": ManifestFile,
    "mlflow.yaml": ManifestFile,
    "vllm.yaml": ManifestFile,
    "router.yaml": ManifestFile,
}


@pytest.fixture
def deploy(tmp_path) -> Path:
    """A copy of configs/deploy (and docs/deploy.md beside it) to break."""
    folder = tmp_path / "deploy"
    shutil.copytree(DEPLOY, folder)
    shutil.copy(DOC, tmp_path / "deploy.md")
    return folder


def edit_documents(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    change(documents)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


def container(documents: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return find(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def step_names() -> set[str]:
    from loop_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    return {graph.get(key).assets_def.op.name for key in graph.get_all_asset_keys()}


# ------------------------------------------------------------------------------------------------
# The shipped files


def test_every_deploy_file_loads_with_its_model_and_the_files_agree():
    assert {p.name for p in DEPLOY.glob("*.yaml")} == set(MODELS)
    for name, model in MODELS.items():
        assert isinstance(DeployFile.from_yaml(DEPLOY / name), model), name
    assert cross_file_problems(DEPLOY, step_names()) == {}
    assert undocumented(DEPLOY, DOC) == []


def test_the_instance_is_valid_for_dagster_itself_and_its_launcher_for_k8s_run_launcher():
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    config, custom_class = dagster_instance_config(str(DEPLOY), config_filename="dagster.yaml")
    assert custom_class is None
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "LOOP_PG_URL"}}}
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert validate_config(K8sRunLauncher.config_type(), launcher["config"]).success
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    assert config["concurrency"]["pools"]["default_limit"] == 1  # `gpu` without its own limit: one at a time
    assert InstanceFile.from_yaml(DEPLOY / "dagster.yaml").launcher["job_namespace"] == "loop"
    # The pool limit the dagster-pools Job sets is a real `dagster instance concurrency set` command.
    pools = container_of_job(ManifestFile.from_yaml(DEPLOY / "dagster-k8s.yaml"), "dagster-pools")
    assert pools["command"][:5] == ["dagster", "instance", "concurrency", "set", "gpu"] and int(pools["command"][5]) >= 1


def container_of_job(loaded: ManifestFile, name: str) -> dict[str, Any]:
    return loaded.find("Job", name)[0].body["spec"]["template"]["spec"]["containers"][0]


def test_the_executor_is_k8s_job_executor_config_and_the_definitions_use_it_when_configured(tmp_path, monkeypatch):
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    from loop_pipeline.definitions import build_defs
    from loop_pipeline.settings import LoopSettings

    raw = yaml.safe_load((DEPLOY / "executor.yaml").read_text(encoding="utf-8"))
    assert validate_config(k8s_job_executor.config_schema.as_field().config_type, raw).success
    assert set(ExecutorFile.from_yaml(DEPLOY / "executor.yaml").step_keys) <= step_names()
    executor = build_executor(DEPLOY / "executor.yaml")
    assert executor.name == "loop_k8s_job_executor" and build_executor(None) is None

    monkeypatch.chdir(REPO_ROOT)
    settings = LoopSettings(home=tmp_path / "home", executor_deploy=str(DEPLOY / "executor.yaml"))
    assert build_defs(settings).executor.name == "loop_k8s_job_executor"
    assert build_defs(LoopSettings(home=tmp_path / "home")).executor is None


# ------------------------------------------------------------------------------------------------
# A broken value fails, naming the file and the field


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("dagster.yaml", lambda d: d[0]["run_launcher"]["config"].update(job_imagee="x"), "run_launcher.config.job_imagee: unknown key"),
        ("dagster.yaml", lambda d: d[0]["run_monitoring"].update(poll_interval_seconds="often"), "run_monitoring.poll_interval_seconds: expected Int (got 'often')"),
        ("dagster.yaml", lambda d: d[0].update(run_queue={"max_concurrent_runs": 3}), "incompatible with the `concurrency > runs` config"),
        ("dagster.yaml", lambda d: d[0]["run_launcher"]["config"]["volumes"][0].update(persistentVolumeClaimm={}), "run_launcher.config.volumes[0].persistentVolumeClaimm: unknown key"),
        ("dagster.yaml", lambda d: d[0]["run_launcher"].update({"class": "DefaultRunLauncher", "module": "dagster"}), "run_launcher: expected module dagster_k8s, class K8sRunLauncher"),
        ("executor.yaml", lambda d: d[0].update(max_concurrent="eight"), "max_concurrent: expected Int (got 'eight')"),
        ("executor.yaml", lambda d: d[0]["per_step_k8s_config"]["lora_adapter"]["container_config"].update(resourcez={}), "per_step_k8s_config.lora_adapter.container_config.resourcez: unknown key"),
        ("vllm.yaml", lambda d: find(d, "Deployment", "vllm")["spec"].update(replica=2), "Deployment/vllm: spec.replica: unknown key"),
        ("vllm.yaml", lambda d: container(d, "vllm").pop("image"), "Deployment/vllm: container vllm: no image"),
        ("vllm.yaml", lambda d: find(d, "Deployment", "vllm")["spec"]["template"]["spec"].pop("tolerations"), "asks for nvidia.com/gpu but the pod has no toleration"),
        ("mlflow.yaml", lambda d: container(d, "mlflow")["env"].pop(0), "$(MLFLOW_BACKEND_STORE_URI) in its command is not one of its env variables"),
        ("mlflow.yaml", lambda d: container(d, "mlflow")["resources"].pop("limits"), "container mlflow: resources.limits has no cpu / memory"),
        ("router.yaml", lambda d: container(d, "loop-router")["ports"][0].update(containerPort="8080"), "ports[0].containerPort: expected int (got '8080')"),
        ("dagster-k8s.yaml", lambda d: find(d, "Service", "loop-code").pop("metadata"), "needs apiVersion, kind and metadata.name"),
    ],
)
def test_a_broken_file_fails_in_one_line_naming_file_object_and_field(deploy, file, change, message):
    path = deploy / file
    edit_documents(path, change)
    with pytest.raises(ConfigError) as caught:
        DeployFile.from_yaml(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text, text


def _problems(deploy: Path) -> str:
    return " | ".join(cross_file_problems(deploy, step_names()).values())


def _set_router(deploy: Path, **values: Any) -> None:
    def change(documents):
        config_map = find(documents, "ConfigMap", "loop-router")
        settings = yaml.safe_load(config_map["data"]["router.yaml"]) | values
        config_map["data"]["router.yaml"] = yaml.safe_dump(settings)

    edit_documents(deploy / "router.yaml", change)


def test_the_router_settings_validate_with_router_settings_and_call_what_vllm_serves(deploy):
    from loop_pipeline.router.settings import RouterSettings

    text = find(list(yaml.safe_load_all((DEPLOY / "router.yaml").read_text())), "ConfigMap", "loop-router")["data"]["router.yaml"]
    (deploy / "settings.yaml").write_text(text)
    settings = RouterSettings.load(deploy / "settings.yaml")
    (deploy / "settings.yaml").unlink()
    assert (settings.local_backend, settings.local_model, settings.host) == ("openai", "loop-candidate", "0.0.0.0")

    _set_router(deploy, shadow_rate=1.5)
    assert "router.yaml: ConfigMap/loop-router: router.yaml: shadow_rate: Input should be less than or equal to 1 (got 1.5)" in _problems(deploy)
    _set_router(deploy, shadow_rate=0.0, local_model="another-model")
    assert "local_model 'another-model' is not served by Deployment/vllm: container vllm (serves ['loop-candidate'])" in _problems(deploy)
    _set_router(deploy, local_model="loop-candidate", local_base_url="http://vllm.loop.svc:9000/v1")
    assert "Service 'vllm' has no port 9000" in _problems(deploy)
    _set_router(deploy, local_base_url="http://vllm.loop.svc:8000/v1", host="127.0.0.1", frontier_api_key_env="LOOP_OTHER_KEY")
    problems = _problems(deploy)
    assert "host 127.0.0.1 is unreachable through the Service" in problems
    assert "LOOP_OTHER_KEY (named by the router settings) is not set in its env" in problems


def test_vllm_may_serve_the_champion_as_base_plus_lora_adapter_under_the_routers_name(deploy):
    def lora(name):
        def change(documents):
            container(documents, "vllm")["args"] = [
                "/models/base", "--enable-lora", f"--lora-modules={name}=/models/adapter", "--max-lora-rank=16", "--port=8000",
            ]
        return change

    edit_documents(deploy / "vllm.yaml", lora("loop-candidate"))
    assert cross_file_problems(deploy, step_names()) == {}
    edit_documents(deploy / "vllm.yaml", lora("something-else"))
    assert "local_model 'loop-candidate' is not served by Deployment/vllm: container vllm (serves ['something-else'])" in _problems(deploy)
    edit_documents(deploy / "vllm.yaml", lambda d: container(d, "vllm")["args"].append("--tensor-parallel-size=2"))
    assert "nvidia.com/gpu limit '1' is not --tensor-parallel-size 2" in _problems(deploy)


def test_mlflow_server_arguments_are_parsed_by_mlflow_and_accept_the_pods_tracking_uri(deploy):
    def args(change):
        edit_documents(deploy / "mlflow.yaml", lambda d: change(container(d, "mlflow")["args"]))

    args(lambda a: a.append("--serve-artifact"))
    assert "mlflow server No such option '--serve-artifact'" in _problems(deploy)
    args(lambda a: a.remove("--serve-artifact"))
    args(lambda a: a.__setitem__(-1, "--allowed-hosts=mlflow.example.com"))
    assert "refuses Host mlflow.loop.svc:5000 of LOOP_MLFLOW_TRACKING_URI (--allowed-hosts)" in _problems(deploy)
    args(lambda a: a.append("--no-serve-artifacts"))
    assert "pods log to mlflow-artifacts:/loop but the server runs without --serve-artifacts" in _problems(deploy)


def test_dagster_pods_runs_and_the_trainer_agree_on_image_instance_namespace_and_one_daemon(deploy):
    edit_documents(deploy / "dagster-k8s.yaml", lambda d: find(d, "Deployment", "dagster-daemon")["spec"].update(replicas=2))
    edit_documents(deploy / "dagster-k8s.yaml", lambda d: container(d, "loop-code").update(image="registry.example.com/other:1"))
    edit_documents(deploy / "k8s-training.yaml", lambda d: d[0]["trainer"].update(namespace="ml-training", service_account="nobody"))
    edit_documents(deploy / "dagster-k8s.yaml", lambda d: find(d, "ConfigMap", "loop-env")["data"].update(LOOP_MLFLOW_TRACKING_URL="x"))
    problems = _problems(deploy)
    assert "Deployment/dagster-daemon: the daemon must run exactly one replica" in problems
    assert "Deployment/loop-code: container code: image 'registry.example.com/other:1', runs use 'registry.example.com/loop-pipeline:latest'" in problems
    assert "trainer.namespace 'ml-training': the run launcher's job_namespace is 'loop'" in problems
    assert "trainer.service_account 'nobody' is no ServiceAccount of configs/deploy" in problems
    assert "ConfigMap/loop-env: LOOP_MLFLOW_TRACKING_URL is read by nothing" in problems


def test_every_variable_and_secret_key_is_documented_and_a_missing_row_fails(deploy):
    documented = read_documented(DOC)
    assert {"LOOP_PG_URL", "MLFLOW_S3_ENDPOINT_URL", "LOOP_EXECUTOR_DEPLOY", "VLLM_API_KEY"} <= documented.variables
    assert documented.secrets["loop-router"] == {"LOOP_FRONTIER_API_KEY", "LOOP_LOCAL_API_KEY", "LOOP_ROUTER_API_KEYS"}

    doc = deploy.parent / "deploy.md"
    doc.write_text("\n".join(line for line in DOC.read_text().splitlines() if not line.startswith("| `MLFLOW_S3_ENDPOINT_URL`")))
    edit_documents(deploy / "router.yaml", lambda d: container(d, "loop-router")["env"].append(
        {"name": "LOOP_ROUTER_SHADOW_RATE", "valueFrom": {"secretKeyRef": {"name": "loop-router", "key": "SHADOW"}}}))
    problems = undocumented(deploy, doc)
    assert f"{deploy / 'mlflow.yaml'}: Deployment/mlflow: container mlflow: env: MLFLOW_S3_ENDPOINT_URL is not in {doc}'s Environment variables table" in problems
    assert any("key 'SHADOW' of Secret 'loop-router' is not in" in p for p in problems)
    assert any("LOOP_ROUTER_SHADOW_RATE is not in" in p for p in problems)
    assert len(problems) == 3


def test_config_check_validates_the_deploy_files_and_names_the_broken_one(tmp_path):
    from loop_pipeline.cli import app
    from loop_pipeline_tests.helpers import REPO_CONFIGS, last_json_line

    folder = tmp_path / "configs"
    shutil.copytree(REPO_CONFIGS, folder)
    _set_router(folder / "deploy", local_model="another-model")
    result = CliRunner().invoke(app, ["config", "check", "--dir", str(folder)])
    assert result.exit_code == 2, result.output
    assert list(last_json_line(result.stdout)["failed"]) == [str(folder / "deploy" / "router.yaml")]
    assert "local_model 'another-model' is not served" in result.stderr
