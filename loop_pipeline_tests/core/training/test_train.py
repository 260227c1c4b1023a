"""The LoRA trainer on a tiny Llama model: SFT lowers the completion loss and the saved adapter
loads and generates, KTO and DPO continue from it, missing data fails before a model loads, and
``python -m loop_pipeline.core.training`` prints one JSON result line.

The datasets are built with ``build_datasets`` from the toy examples frame, so the trainer reads
exactly the columns the datasets stage writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from loop_pipeline.core.contracts import DatasetVersion

from loop_pipeline.config import ConfigError
from loop_pipeline.core.datasets import build_datasets
from loop_pipeline.core.models import cpu_has_native_bf16, load_adapter_and_generate, prepare_prompt
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.core.training import TrainConfig, main, materialization_metadata
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline_tests.core.training.toy import SYSTEM, corpus, examples, train_config
from loop_pipeline_tests.tiny_models import build_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training")
    model = build_tiny_model(root / "tiny-llama", corpus())
    version = root / "datasets" / "v-toy"
    version.mkdir(parents=True)
    for name, frame in build_datasets(examples()).items():
        write_parquet_atomic(version / f"{name}.parquet", frame)
    return {"root": root, "model": model, "version": version}


def _config(workspace, out: Path, **overrides) -> dict:
    return train_config(workspace["model"], workspace["version"], workspace["root"], out, **overrides)


@pytest.fixture(scope="module")
def sft_result(workspace):
    return main(TrainConfig.from_mapping(_config(workspace, workspace["root"] / "run-sft")))


def test_sft_lowers_the_completion_loss_and_saves_an_adapter(sft_result, workspace):
    result = sft_result
    assert result.sft_steps == 100 and result.steps == 100 and result.negative_steps == 0
    assert result.initial_loss is not None and result.final_loss is not None
    assert result.final_loss < 0.5 * result.initial_loss, (result.initial_loss, result.final_loss)
    assert result.dataset_version == "v-toy"
    assert result.base_model == str(workspace["model"])
    # dtype auto: bfloat16 only on a CPU that computes it natively (CI machines differ)
    assert result.dtype == ("bfloat16" if cpu_has_native_bf16() else "float32") and result.device == "cpu"
    assert result.tokens_per_s > 0 and result.peak_rss_mb > 0 and result.mlflow_run_id
    adapter = Path(result.adapter_path)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    saved = json.loads((adapter.parent / "train_result.json").read_text())
    assert saved == result.to_dict()
    config = json.loads((adapter.parent / "train_config.json").read_text())
    assert config["lora"]["r"] == 8 and config["output_dir"] == str(workspace["root"] / "run-sft")
    metadata = materialization_metadata(result)
    assert metadata["adapter_path"] == result.adapter_path and "sft_adapter_path" not in metadata


def test_the_adapter_loads_and_answers_the_toy_task(sft_result, workspace):
    prompts = [("my refund is wrong", "billing"), ("help with hotel please", "travel"), ("crash problem today", "tech")]
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}] for text, _ in prompts]
    answers = load_adapter_and_generate(str(workspace["model"]), sft_result.adapter_path, conversations, max_new_tokens=8)
    assert answers == [label for _, label in prompts]
    single = load_adapter_and_generate(str(workspace["model"]), sft_result.adapter_path, conversations[0], max_new_tokens=8)
    assert single == "billing"


@pytest.mark.parametrize("stage", ["kto", "dpo"])
def test_negative_stage_continues_from_the_sft_adapter(workspace, stage):
    raw = _config(
        workspace,
        workspace["root"] / f"run-{stage}",
        sft={"max_steps": 10},
        negatives={"stage": stage, "max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
        tracking={"enabled": False},
        export={"merged": False},
    )
    result = main(TrainConfig.from_mapping(raw))
    assert result.negative_stage == stage
    assert result.sft_steps == 10 and result.negative_steps == 3 and result.steps == 13
    assert result.negative_final_loss is not None and result.mlflow_run_id is None
    assert Path(result.sft_adapter_path, "adapter_config.json").is_file()
    assert Path(result.adapter_path, "adapter_model.safetensors").is_file()
    assert Path(result.adapter_path) != Path(result.sft_adapter_path)
    answer = load_adapter_and_generate(
        str(workspace["model"]), result.adapter_path, [{"role": "user", "content": "my invoice is wrong"}], max_new_tokens=4
    )
    assert isinstance(answer, str)


def test_missing_dataset_file_fails_before_loading_a_model(workspace, tmp_path):
    raw = _config(workspace, tmp_path / "out", data={"version_dir": None, "sft": str(tmp_path / "nope.parquet")})
    with pytest.raises(ConfigError, match=r"data\.sft: file not found"):
        main(TrainConfig.from_mapping(raw))
    assert not (tmp_path / "out").exists()


def test_an_unresolved_latest_fails_before_anything_is_written(workspace, tmp_path):
    raw = _config(workspace, tmp_path / "out", data={"version_dir": "latest"})
    with pytest.raises(ConfigError, match="data.version_dir: 'latest' must be resolved"):
        main(TrainConfig.from_mapping(raw))
    assert not (tmp_path / "out").exists()


def _module(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loop_pipeline.core.training", *args],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout,
    )


def test_module_entry_prints_one_json_line(workspace, tmp_path, loop_home):
    out = tmp_path / "out"
    path = tmp_path / "train.yaml"
    # data.version_dir: latest and no MLflow store: the entry point fills both from LOOP_HOME.
    raw = _config(workspace, out, sft={"logging_steps": 1}, data={"version_dir": "latest"}, tracking={"tracking_uri": None, "artifact_root": None})
    path.write_text(yaml.safe_dump(raw))
    (loop_home / "datasets").mkdir(parents=True)
    (loop_home / "datasets" / "v-toy").symlink_to(workspace["version"])
    # `latest` is the version training_datasets materialized last: its typed value.
    results = loop_home / "warehouse" / "results"
    results.mkdir(parents=True)
    version = DatasetVersion(version="v-toy", path=str(loop_home / "datasets" / "v-toy"), new_version=True, rows={"sft": 1})
    (results / "training_datasets.json").write_text(version.model_dump_json())
    done = _module(["--config", str(path), "--max-steps", "4"], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["sft_steps"] == 4 and result["adapter_path"] == str((out / "adapter").resolve())
    assert result["dataset_version"] == "v-toy" and result["mlflow_run_id"]
    assert (loop_home / "mlflow" / "mlflow.db").is_file()  # the store LOOP_HOME implies
    assert "it/s" in done.stderr or "s/it" in done.stderr  # the progress bar, on stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_config(workspace, out, lora={"r": -1})))
    failed = _module(["--config", str(bad)], timeout=60)
    assert failed.returncode == 2 and failed.stdout == ""
    assert f"config error: {bad}: lora.r: Input should be greater than 0 (got -1)" in failed.stderr


def test_system_prompt_drop_trains_without_the_system_turn(workspace, tmp_path):
    raw = _config(
        workspace, tmp_path / "out", sft={"max_steps": 60}, data={"system_prompt": "drop"},
        export={"merged": False}, tracking={"enabled": False},
    )
    result = main(TrainConfig.from_mapping(raw))
    assert result.system_prompt == "drop" and result.merged_path is None
    prompts = [("my refund is wrong", "billing"), ("help with hotel please", "travel")]
    answers = load_adapter_and_generate(
        str(workspace["model"]),
        result.adapter_path,
        [prepare_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}], "drop") for t, _ in prompts],
        max_new_tokens=8,
    )
    assert answers == [label for _, label in prompts]


def test_completion_loss_is_the_models_own_loss(workspace):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loop_pipeline.core.training.sft import completion_loss

    tokenizer = AutoTokenizer.from_pretrained(workspace["model"])
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(workspace["model"], dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    encoded = tokenizer(["my refund is wrong billing", "help with hotel please travel"], return_tensors="pt", padding=True)
    labels = encoded["input_ids"].clone()
    labels[:, :-2] = -100  # the completion: the last two positions
    inputs = {**encoded, "labels": labels}
    expected = model(**inputs).loss
    got = completion_loss(model, inputs)
    assert torch.allclose(got, expected, atol=1e-5), (float(got), float(expected))
    got.backward()  # gradients reach the adapter
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


def test_fast_options_train_only_the_top_layers_without_a_system_turn(workspace, tmp_path):
    """loss: completion, lora.top_layers and system_prompt: none, as the demo's config uses them."""
    from safetensors import safe_open

    raw = _config(workspace, tmp_path / "run-fast")
    raw["sft"]["loss"] = "completion"
    raw["lora"]["top_layers"] = 1
    raw["lora"]["target_modules"] = ["q_proj", "v_proj", "gate_proj"]
    raw["data"]["system_prompt"] = "none"
    result = main(TrainConfig.from_mapping(raw))
    assert result.final_loss < 0.5 * result.initial_loss, (result.initial_loss, result.final_loss)
    assert result.system_prompt == "none"
    with safe_open(str(Path(result.adapter_path) / "adapter_model.safetensors"), "pt") as weights:
        layers = {int(name.split(".layers.")[1].split(".")[0]) for name in weights.keys()}
    n_layers = json.loads((workspace["model"] / "config.json").read_text())["num_hidden_layers"]
    assert layers == {n_layers - 1}, layers
