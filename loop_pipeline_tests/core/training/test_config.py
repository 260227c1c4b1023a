"""The train config: a bad file fails at load time with one line naming the file and the field;
what the caller must fill (``latest``, the model cache, the MLflow store) is checked before a run
and filled by ``fill_run_defaults`` at the entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loop_pipeline.config import ConfigError
from loop_pipeline.core.training import TrainConfig
from loop_pipeline.settings import REPO_ROOT, LoopSettings
from loop_pipeline.core.contracts import DatasetVersion
from loop_pipeline.training_entry import fill_run_defaults, latest_dataset_version_dir
from loop_pipeline_tests.core.training.toy import train_config


def _raw(tmp_path: Path, **overrides) -> dict:
    return train_config("some/model", tmp_path / "v-toy", tmp_path, tmp_path / "out", **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora": {"r": 0}}, "lora.r: Input should be greater than 0 (got 0)"),
        ({"lora": {"r": -1}}, "lora.r: Input should be greater than 0 (got -1)"),
        ({"lora": {"r": True}}, "lora.r: Input should be a valid integer (got True)"),
        ({"lora": {"rank": 8}}, "lora.rank: unknown key"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout: Input should be less than 1 (got 1.0)"),
        ({"lora": {"top_layers": 0}}, "lora.top_layers: Input should be greater than 0 (got 0)"),
        ({"lora": {"top_layers": 2, "target_modules": "all-linear"}}, "lora: Value error, top_layers needs target_modules as a list"),
        ({"sft": {"loss": "fused"}}, "sft.loss: Input should be 'model', 'completion' or 'trl' (got 'fused')"),
        ({"data": {"system_prompt": "empty"}}, "data.system_prompt: Input should be 'keep', 'drop' or 'none' (got 'empty')"),
        ({"sft": {"learning_rate": "fast"}}, "sft.learning_rate: Input should be a valid number (got 'fast')"),
        ({"sft": {"max_seq_length": 64}}, "sft.max_seq_length: unknown key"),
        ({"sft": {"packing": "yes"}}, "sft.packing: Input should be a valid boolean (got 'yes')"),
        ({"model": {"dtype": "float16"}}, "model.dtype: Input should be 'auto', 'float32' or 'bfloat16' (got 'float16')"),
        ({"model": {"base": ""}}, "model.base: String should have at least 1 character"),
        ({"negatives": {"stage": "orpo"}}, "negatives.stage: Input should be 'none', 'kto' or 'dpo' (got 'orpo')"),
        ({"data": {"version_dir": None}}, "data: Value error, set data.version_dir"),
        ({"epochs": 3}, "epochs: unknown key"),
        ({"output_dir": ""}, "output_dir: String should have at least 1 character"),
    ],
)
def test_bad_config_fails_in_one_line_naming_the_file_and_the_field(tmp_path, overrides, message):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path, **overrides)))
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text


def test_a_negatives_stage_needs_its_data(tmp_path):
    raw = _raw(tmp_path, data={"version_dir": None, "sft": str(tmp_path / "sft.parquet")}, negatives={"stage": "kto"})
    with pytest.raises(ConfigError, match=r"data\.kto: required by negatives\.stage='kto'"):
        TrainConfig.from_mapping(raw, source="train.yaml")
    raw["data"]["kto"] = str(tmp_path / "kto.parquet")
    assert TrainConfig.from_mapping(raw).negatives.stage == "kto"


def test_a_section_left_empty_takes_the_defaults(tmp_path):
    config = TrainConfig.from_mapping(_raw(tmp_path, lora=None, export=None))
    assert config.lora.r == 16 and config.export.merged is True


@pytest.mark.parametrize("name", ["tiny", "smollm2-clinc"])
def test_example_configs_are_valid(name):
    config = TrainConfig.from_yaml(REPO_ROOT / "configs" / "train" / f"{name}.yaml")
    assert config.lora.r > 0 and config.data.version_dir == "latest"


def test_the_run_check_names_what_the_caller_must_fill(tmp_path):
    latest = TrainConfig.from_mapping(_raw(tmp_path, data={"version_dir": "latest"}))
    with pytest.raises(ConfigError, match="data.version_dir: 'latest' must be resolved to a dataset version folder by the caller"):
        latest.check_runnable()
    packaged = TrainConfig.from_mapping(_raw(tmp_path, model={"base": "smollm2-135m-instruct"}))
    with pytest.raises(ConfigError, match="model.cache_dir: required for the packaged model 'smollm2-135m-instruct'"):
        packaged.check_runnable()
    untracked = TrainConfig.from_mapping(_raw(tmp_path, tracking={"tracking_uri": None}))
    with pytest.raises(ConfigError, match="tracking: enabled without tracking.tracking_uri"):
        untracked.check_runnable()
    TrainConfig.from_mapping(_raw(tmp_path, tracking={"enabled": False, "tracking_uri": None})).check_runnable()


def test_fill_run_defaults_resolves_latest_the_cache_and_the_store_from_settings(tmp_path, loop_home):
    raw = _raw(tmp_path, data={"version_dir": "latest"}, tracking={"tracking_uri": None, "artifact_root": None})
    config = TrainConfig.from_mapping(raw)
    settings = LoopSettings()
    with pytest.raises(ConfigError, match="data.version_dir: latest, but training_datasets has not been materialized"):
        fill_run_defaults(config, settings)
    datasets = settings.paths.datasets
    # What the training_datasets asset left through the results IO manager.
    version = DatasetVersion(version="v-toy", path=str(datasets / "v-toy"), new_version=True, rows={"sft": 1})
    results = settings.paths.warehouse / "results"
    results.mkdir(parents=True)
    (results / "training_datasets.json").write_text(version.model_dump_json())
    filled = fill_run_defaults(config, settings)
    assert filled.data.version_dir == str(datasets / "v-toy")
    assert filled.model.cache_dir == str(settings.paths.models)
    assert filled.tracking.tracking_uri == settings.tracking().tracking_uri
    filled.check_runnable()
    # An explicit folder wins over the pointer; what the file sets stays.
    chosen = fill_run_defaults(config.with_overrides({"model": {"cache_dir": "/models"}}), settings, tmp_path / "v-2")
    assert chosen.data.version_dir == str(tmp_path / "v-2") and chosen.model.cache_dir == "/models"
    assert latest_dataset_version_dir(settings) == datasets / "v-toy"
