"""The LoRA trainer on a tiny Llama model: SFT lowers the completion loss and the saved adapter
loads and generates, KTO and DPO continue from it, bad configs fail fast naming the field, and
``python -m loop_pipeline.core.training`` prints one JSON result line.

The datasets are built with ``build_datasets`` from a hand-made examples frame (a learnable
3-way toy classification), so the trainer reads exactly the columns the datasets stage writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from loop_pipeline.core.datasets import build_datasets
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.core.models import load_adapter_and_generate, prepare_prompt
from loop_pipeline.core.training import TrainConfig, main
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline.settings import REPO_ROOT, ConfigError
from loop_pipeline_tests.tiny_models import build_tiny_model

torch.set_num_threads(1)

SYSTEM = "Classify the request."
LABELS = {"billing": ["invoice", "refund", "charge"], "travel": ["flight", "hotel", "trip"], "tech": ["login", "crash", "error"]}
WRONG = {"billing": "travel", "travel": "tech", "tech": "billing"}


def _examples() -> pl.DataFrame:
    rows = []
    n = 0
    for label, words in LABELS.items():
        for word in words:
            for template in ("my {} is wrong", "help with {} please", "question about the {}", "{} problem today"):
                n += 1
                bad = n % 3 == 0
                rows.append(
                    {
                        "trace_id": f"t{n:03d}",
                        "task_type": "classify",
                        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": template.format(word)}],
                        "output": WRONG[label] if bad else label,
                        "target": label,
                        "target_source": "review" if bad else "output",
                        "output_is_bad": bad,
                        "split": "train",
                        "group_key": f"prompt:{n}",
                        "reviewed": bad,
                        "review_label": label if bad else None,
                        "sim_gold": label,
                    }
                )
    return pl.DataFrame(rows).with_columns(pl.col("messages").cast(MESSAGES_DTYPE))


def _corpus() -> list[str]:
    lines = [SYSTEM, "system user assistant"]
    for label, words in LABELS.items():
        lines.append(label)
        for word in words:
            lines += [f"my {word} is wrong", f"help with {word} please", f"question about the {word}", f"{word} problem today"]
    return lines * 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training")
    model = build_tiny_model(root / "tiny-llama", _corpus())
    version = root / "datasets" / "v-toy"
    version.mkdir(parents=True)
    for name, frame in build_datasets(_examples()).items():
        write_parquet_atomic(version / f"{name}.parquet", frame)
    return {"root": root, "model": model, "version": version}


def _config(workspace, out: Path, **overrides) -> dict:
    raw = {
        "model": {"base": str(workspace["model"]), "dtype": "auto"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {
            "max_steps": 100,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-2,
            "max_length": 64,
            "seed": 0,
            "logging_steps": 5,
        },
        "negatives": {"stage": "none"},
        "data": {"version_dir": str(workspace["version"])},
        "tracking": {
            "tracking_uri": f"sqlite:///{workspace['root'] / 'mlflow.db'}",
            "artifact_root": (workspace["root"] / "mlflow-artifacts").as_uri(),
        },
        "output_dir": str(out),
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return raw


@pytest.fixture(scope="module")
def sft_result(workspace):
    config = TrainConfig.from_mapping(_config(workspace, workspace["root"] / "run-sft"))
    return main(config)


def test_sft_lowers_the_completion_loss_and_saves_an_adapter(sft_result, workspace):
    result = sft_result
    assert result.sft_steps == 100 and result.steps == 100 and result.negative_steps == 0
    assert result.initial_loss is not None and result.final_loss is not None
    assert result.final_loss < 0.5 * result.initial_loss, (result.initial_loss, result.final_loss)
    assert result.dataset_version == "v-toy"
    assert result.base_model == str(workspace["model"])
    assert result.dtype == "float32" and result.device == "cpu"
    assert result.tokens_per_s > 0 and result.peak_rss_mb > 0
    adapter = Path(result.adapter_path)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    saved = json.loads((adapter.parent / "train_result.json").read_text())
    assert saved["adapter_path"] == result.adapter_path


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
    )
    result = main(TrainConfig.from_mapping(raw))
    assert result.negative_stage == stage
    assert result.sft_steps == 10 and result.negative_steps == 3 and result.steps == 13
    assert result.negative_final_loss is not None
    assert Path(result.sft_adapter_path, "adapter_config.json").is_file()
    assert Path(result.adapter_path, "adapter_model.safetensors").is_file()
    assert Path(result.adapter_path) != Path(result.sft_adapter_path)
    answer = load_adapter_and_generate(
        str(workspace["model"]), result.adapter_path, [{"role": "user", "content": "my invoice is wrong"}], max_new_tokens=4
    )
    assert isinstance(answer, str)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora": {"r": 0}}, "lora.r: must be a positive integer"),
        ({"lora": {"rank": 8}}, "lora: unknown key(s) ['rank']"),
        ({"lora": {"target_modules": []}}, "lora.target_modules:"),
        ({"sft": {"learning_rate": "fast"}}, "sft.learning_rate: must be a positive number"),
        ({"sft": {"max_seq_length": 64}}, "sft: unknown key(s) ['max_seq_length']"),
        ({"sft": {"packing": "yes"}}, "sft.packing: must be true or false"),
        ({"model": {"dtype": "float16"}}, "model.dtype: must be one of"),
        ({"model": {"base": ""}}, "model.base: must be a non-empty string"),
        ({"negatives": {"stage": "orpo"}}, "negatives.stage: must be one of"),
        ({"data": {"version_dir": None}}, "data: set data.version_dir"),
        ({"epochs": 3}, "train config: unknown key(s) ['epochs']"),
        ({"output_dir": ""}, "output_dir: must be a non-empty string"),
    ],
)
def test_bad_config_fails_fast_naming_the_field(workspace, tmp_path, overrides, message):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_config(workspace, tmp_path / "out", **overrides)))
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_dataset_file_fails_before_loading_a_model(workspace, tmp_path):
    raw = _config(workspace, tmp_path / "out", data={"version_dir": None, "sft": str(tmp_path / "nope.parquet")})
    with pytest.raises(ConfigError, match=r"data\.sft: file not found"):
        main(TrainConfig.from_mapping(raw))
    assert not (tmp_path / "out").exists()


def test_example_config_is_valid():
    config = TrainConfig.from_yaml(REPO_ROOT / "configs" / "train" / "tiny.yaml")
    assert config.lora.r > 0 and config.negatives.stage in ("none", "kto", "dpo")


def test_module_entry_prints_one_json_line(workspace, tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_config(workspace, out, sft={"max_steps": 4, "logging_steps": 1})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "loop_pipeline.core.training", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["sft_steps"] == 4 and result["adapter_path"] == str((out / "adapter").resolve())
    assert "it/s" in done.stderr or "s/it" in done.stderr  # the progress bar, on stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_config(workspace, out, lora={"r": -1})))
    failed = subprocess.run(
        [sys.executable, "-m", "loop_pipeline.core.training", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert "lora.r: must be a positive integer" in failed.stderr


def test_system_prompt_drop_trains_without_the_system_turn(workspace, tmp_path):
    raw = _config(workspace, tmp_path / "out", sft={"max_steps": 60}, data={"system_prompt": "drop"}, export={"merged": False})
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


def test_prepare_prompt_drops_only_system_turns():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u", "extra": 1}]
    assert prepare_prompt(messages, "drop") == [{"role": "user", "content": "u"}]
    assert prepare_prompt(messages, "keep") == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_packaged_model_without_its_package_is_a_clear_error(monkeypatch, tmp_path):
    from loop_pipeline.core import models

    monkeypatch.setitem(
        models.PACKAGED_MODELS, "missing-model", models.PackagedGguf("no_such_package_xyz", "m.gguf", "pip install it")
    )
    with pytest.raises(ConfigError, match="package no_such_package_xyz is not installed; pip install it"):
        models.resolve_base_model("missing-model", tmp_path)
    assert models.resolve_base_model(str(tmp_path), tmp_path) == str(tmp_path)  # a folder is used as given


def test_smollm2_resolves_to_a_converted_cached_folder(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from loop_pipeline.core.models import resolve_base_model

    folder = Path(resolve_base_model("smollm2-135m-instruct", tmp_path))
    assert folder == tmp_path / "smollm2-135m-instruct"
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.hidden_size == 576 and config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model("smollm2-135m-instruct", tmp_path) == str(folder)  # cached: not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_version_dir_latest_reads_loop_home(workspace, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LOOP_HOME", str(home))
    config = TrainConfig.from_mapping(_config(workspace, tmp_path / "out", data={"version_dir": "latest"}))
    with pytest.raises(ConfigError, match="data.version_dir: latest, but .*LATEST is missing"):
        config.data.path("sft")
    datasets = home / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "LATEST").write_text("v-toy\n")
    assert config.data.path("sft") == datasets / "v-toy" / "sft.parquet"
