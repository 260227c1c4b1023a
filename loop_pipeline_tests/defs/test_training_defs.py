"""The training stage through a real Dagster run: simulated CLINC150 traffic is ingested, scored and
turned into a dataset version, then ``lora_adapter`` trains a tiny Llama on the version
``training_datasets`` handed over, in a real Pipes subprocess. Progress reaches the event log, the
MLflow run holds metrics and artifacts, the typed result names the adapter and its dataset, the
adapter generates; the Kubernetes variant of the launcher is validated from configs/deploy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
import polars as pl
import pytest
import torch
import yaml

from loop_pipeline.config import ConfigError
from loop_pipeline.core.contracts import DatasetVersion, TrainedAdapter
from loop_pipeline.core.models import load_adapter_and_generate, prepare_prompt
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.definitions import build_defs
from loop_pipeline.defs.training.assets import GPU_POOL, LORA_ADAPTER, run_train_config, train_config_path
from loop_pipeline.instance import instance_config
from loop_pipeline.resources.trainer import K8sTrainerLauncher, K8sTrainerSpec, TrainerLauncher
from loop_pipeline.runs import materialize_datasets, materialize_ingest, materialize_scoring, read_result
from loop_pipeline.settings import REPO_ROOT, LoopSettings
from loop_pipeline.sim import SimulationConfig
from loop_pipeline_tests.helpers import simulate_landing
from loop_pipeline_tests.tiny_models import build_tiny_model

torch.set_num_threads(1)

SIMULATION = {
    "days": 1,
    "traces_per_day": 400,
    "start_date": "2026-11-01",
    "human_review_rate": 0.3,
    "domains": ["banking", "travel"],
}
K8S_DEPLOY = REPO_ROOT / "configs" / "deploy" / "k8s-training.yaml"


@dataclass
class Trained:
    home: Path
    model: Path
    version: DatasetVersion  # what training_datasets handed over
    config_path: Path
    run: dg.ExecuteInProcessResult
    logs: list[str]
    tracking_uri: str


def _train_yaml(folder: Path, model: Path) -> Path:
    raw = {
        "model": {"base": str(model), "dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": 80, "per_device_train_batch_size": 8, "learning_rate": 2e-2, "max_length": 64, "seed": 0, "logging_steps": 5},
        "data": {"version_dir": "latest", "system_prompt": "drop"},
        "export": {"merged": True, "merged_dtype": "float32"},
        "output_dir": "ignored-the-asset-chooses",
    }
    path = folder / "tiny-train.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[Trained]:
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("training_defs")
        home = root / "loop_home"
        # Module scope, so not the loop_home fixture: the same isolation, once for the module.
        for name in [n for n in os.environ if n.startswith("LOOP_") and n != "LOOP_TEST_PG_URL"]:
            patch.delenv(name)
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.setenv("LOOP_HOME", str(home))
        settings = LoopSettings()
        simulate_landing(SimulationConfig.from_mapping(SIMULATION), settings.paths.landing)
        with dg.instance_for_test() as instance:
            materialize_ingest(instance=instance)
            materialize_scoring(instance=instance)
            built = materialize_datasets(instance=instance)
            assert not built["blocked_by"], built["blocked_by"]
            version = read_result(build_defs(), "training_datasets", DatasetVersion)
            sft = pl.read_parquet(Path(version.path) / "sft.parquet")
            corpus = [m["content"] for row in sft.get_column("messages").to_list() for m in row] + ["system user assistant"]
            model = build_tiny_model(root / "tiny-llama", corpus, vocab_size=400)
            config_path = _train_yaml(root, model)
            run = _materialize_lora_adapter(config_path, instance)
            logs = [e.message for e in instance.all_logs(run.run_id) if e.message]
        yield Trained(home, model, version, config_path, run, logs, settings.tracking().tracking_uri)


def _materialize_lora_adapter(config_path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = build_defs()
    return dg.materialize(
        [*defs.assets],
        selection=dg.AssetSelection.assets(LORA_ADAPTER),
        resources=defs.resources,
        instance=instance,
        run_config={"ops": {"lora_adapter": {"config": {"train_config": str(config_path)}}}},
        raise_on_error=False,
    )


def _metadata(trained: Trained) -> dict:
    events = trained.run.asset_materializations_for_node("lora_adapter")
    assert len(events) == 1
    return {key: value.value for key, value in events[0].metadata.items()}


def test_lora_adapter_trains_in_a_pipes_subprocess_and_lowers_the_loss(trained):
    assert trained.run.success
    metadata = _metadata(trained)
    assert metadata["sft_steps"] == 80
    assert metadata["final_loss"] < 0.5 * metadata["initial_loss"], metadata
    assert metadata["tokens_per_s"] > 0 and metadata["peak_rss_mb"] > 0
    assert metadata["system_prompt"] == "drop"
    assert metadata["dataset_version"] == trained.version.version and trained.version.version.startswith("ds-")
    assert Path(metadata["adapter_path"], "adapter_model.safetensors").is_file()
    assert Path(metadata["merged_path"], "model.safetensors").is_file()


def test_the_typed_result_names_the_adapter_and_the_version_it_was_handed(trained):
    metadata = _metadata(trained)
    result = read_result(build_defs(), "lora_adapter", TrainedAdapter)
    assert result.adapter_path == metadata["adapter_path"] and result.mlflow_run_id == metadata["mlflow_run_id"]
    assert result.dataset_path == trained.version.path and result.dataset_version == trained.version.version
    assert result.train_config == str(trained.config_path) and result.sft_steps == 80
    # The effective config is on the materialization: the handed version replaced `latest`, the
    # run got its own folder, and the MLflow URI (it may carry credentials) is left out.
    effective = metadata["config/train"]
    assert effective["data"]["version_dir"] == trained.version.path
    assert effective["output_dir"].startswith(str(trained.home / "models" / "runs" / trained.version.version))
    assert "tracking_uri" not in effective["tracking"] and effective["model"]["cache_dir"] == str(trained.home / "models")
    events = trained.run.asset_materializations_for_node("lora_adapter")
    assert events[0].tags["dagster/data_version"] == result.mlflow_run_id


def test_progress_streams_into_the_dagster_event_log(trained):
    steps = [m for m in trained.logs if m.startswith("sft step ")]
    assert len(steps) >= 8, trained.logs[-20:]  # logging_steps 5 over 80 steps, plus the first
    assert any("loss=" in m and "tokens_per_s=" in m for m in steps)
    assert any(m.startswith("sft: ") and "steps planned" in m for m in trained.logs)


def test_mlflow_run_holds_metrics_params_and_artifacts(trained):
    from mlflow.tracking import MlflowClient

    run_id = _metadata(trained)["mlflow_run_id"]
    client = MlflowClient(tracking_uri=trained.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset_version"] == _metadata(trained)["dataset_version"]
    assert run.data.tags["base_model"] == str(trained.model)
    assert run.data.params["lora.r"] == "8" and run.data.params["data.system_prompt"] == "drop"
    assert "tracking.tracking_uri" not in run.data.params
    assert run.data.metrics["tokens_per_s"] > 0 and run.data.metrics["peak_rss_mb"] > 0
    history = [m.value for m in client.get_metric_history(run_id, "sft/loss")]
    assert len(history) >= 8 and history[-1] < history[0]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"adapter", "merged_model", "train_result.json", "train_config.json"} <= artifacts
    adapter_files = {Path(a.path).name for a in client.list_artifacts(run_id, "adapter")}
    assert "adapter_model.safetensors" in adapter_files
    merged_files = {Path(a.path).name for a in client.list_artifacts(run_id, "merged_model")}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= merged_files


def test_the_trained_adapter_and_merged_model_generate(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metadata = _metadata(trained)
    sft = pl.read_parquet(Path(trained.version.path) / "sft.parquet").head(24)
    prompts = [prepare_prompt(row[:-1], "drop") for row in sft.get_column("messages").to_list()]
    labels = {row[-1]["content"] for row in sft.get_column("messages").to_list()}
    answers = load_adapter_and_generate(str(trained.model), metadata["adapter_path"], prompts, max_new_tokens=12)
    assert all(isinstance(a, str) and a for a in answers)
    # 80 steps cannot teach a random tiny model 30 intents (the toy task in core/training/test_train.py
    # checks exact answers); here the adapter must have moved the answers towards the labels.
    def label_likeness(texts: list[str]) -> float:
        return sum(max(_common_prefix(t, label) for label in labels) for t in texts) / len(texts)

    before = [_greedy(AutoModelForCausalLM.from_pretrained(trained.model), AutoTokenizer.from_pretrained(trained.model), p) for p in prompts]
    assert label_likeness(answers) > label_likeness(before) + 2, (answers[:6], before[:6])

    merged = AutoModelForCausalLM.from_pretrained(metadata["merged_path"])
    assert _greedy(merged, AutoTokenizer.from_pretrained(metadata["merged_path"]), prompts[0]) == answers[0]


def _greedy(model, tokenizer, prompt) -> str:
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_training_runs_in_the_gpu_pool_limited_to_one():
    assets = {key: a for a in build_defs().assets for key in a.keys}
    assert assets[LORA_ADAPTER].op.pool == GPU_POOL
    assert instance_config(None, Path("unused"))["concurrency"]["pools"]["default_limit"] == 1
    shipped = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    assert shipped["concurrency"]["pools"]["default_limit"] == 1


def test_bad_train_config_fails_the_asset_before_a_process_starts(trained, tmp_path):
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load(trained.config_path.read_text(encoding="utf-8"))
    raw["lora"]["r"] = 0
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with dg.instance_for_test() as instance:
        run = _materialize_lora_adapter(bad, instance)
        logs = [e.message for e in instance.all_logs(run.run_id) if e.message]
    assert not run.success
    failure = next(e for e in run.all_events if e.is_step_failure)
    assert f"{bad}: lora.r: Input should be greater than 0 (got 0)" in failure.step_failure_data.error.to_string()
    assert not any("training on dataset" in m for m in logs)  # no process was launched


def test_the_run_config_trains_the_handed_version_whatever_the_file_names(tmp_path):
    path = tmp_path / "train.yaml"
    data = {"version_dir": "latest", "sft": "/elsewhere/sft.parquet", "system_prompt": "drop"}
    path.write_text(yaml.safe_dump({"model": {"base": "smollm2-135m-instruct"}, "data": data, "output_dir": "x"}))
    version = DatasetVersion(version="ds-1", path=str(tmp_path / "ds-1"), new_version=True, rows={"sft": 1})
    tracking = TrackingTarget("sqlite:///m.db", "file:///artifacts")
    config = run_train_config(path, version, tmp_path / "models", tracking, "abcdef123456", max_steps=7)
    assert config.data.version_dir == version.path and config.data.sft is None and config.data.system_prompt == "drop"
    assert config.output_dir == str(tmp_path / "models" / "runs" / "ds-1-abcdef12")
    assert config.model.cache_dir == str(tmp_path / "models") and config.sft.max_steps == 7
    assert (config.tracking.tracking_uri, config.tracking.artifact_root) == ("sqlite:///m.db", "file:///artifacts")


def test_train_config_names_resolve_under_the_configs_resource_folder(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "mine.yaml").write_text("{}")
    assert train_config_path("mine", tmp_path) == tmp_path / "train" / "mine.yaml"
    with pytest.raises(ConfigError, match=r"train config 'other' not found in .*; known: \['mine'\]"):
        train_config_path("other", tmp_path)
    assert TrainerLauncher().default_train_config == "smollm2-clinc"
    assert train_config_path(TrainerLauncher().default_train_config, REPO_ROOT / "configs").is_file()


def test_k8s_deploy_example_builds_a_gpu_pod_for_the_trainer():
    from dagster_k8s.pipes import build_pod_body

    launcher = K8sTrainerLauncher.from_yaml(K8S_DEPLOY, default_train_config="tiny")
    assert launcher.gpus == 1 and launcher.image and launcher.default_train_config == "tiny"
    pod = build_pod_body(
        pod_name="lora-adapter-test",
        image=launcher.image,
        command=launcher.command(),
        env_vars={"DAGSTER_PIPES_CONTEXT": "e30=", **launcher.env},
        base_pod_meta=None,
        base_pod_spec=launcher.base_pod_spec(),
    )
    container = pod.spec.containers[0]
    assert container.command == ["python", "-m", "loop_pipeline.core.training", "--pipes"]
    assert container.image == launcher.image
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.volume_mounts[0].mount_path == launcher.env["LOOP_HOME"]
    assert pod.spec.node_selector and pod.spec.tolerations[0].key == "nvidia.com/gpu"
    env = {e.name: e.value for e in container.env}
    assert env["HF_HUB_OFFLINE"] == "1" and "DAGSTER_PIPES_CONTEXT" in env


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gpu_count", 2, "trainer.gpu_count: unknown key"),
        ("gpus", -1, "trainer.gpus: Input should be greater than or equal to 0 (got -1)"),
        ("image", None, "trainer.image: Input should be a valid string (got None)"),
    ],
)
def test_k8s_deploy_config_fails_in_one_line_naming_the_field(tmp_path, key, value, message):
    path = tmp_path / "k8s.yaml"
    raw = yaml.safe_load(K8S_DEPLOY.read_text(encoding="utf-8"))
    raw["trainer"][key] = value
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        K8sTrainerLauncher.from_yaml(path)
    assert str(caught.value) == f"{path}: {message}"


def test_the_k8s_launcher_takes_exactly_the_deploy_file_fields():
    # The launcher's fields mirror K8sTrainerSpec's (Dagster resources cannot nest a ConfigModel).
    launcher_fields = set(K8sTrainerLauncher.model_fields) - {"cwd", "default_train_config"}
    assert launcher_fields == set(K8sTrainerSpec.model_fields)
