"""Training stage: the dataset version ``training_datasets`` handed over -> a LoRA adapter (and
merged model), trained in its own process launched through Dagster Pipes (a local subprocess, or
a Kubernetes GPU job)."""

from pathlib import Path
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from loop_pipeline.config import ConfigError
from loop_pipeline.core.contracts import DatasetVersion, TrainedAdapter
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.core.training import TrainConfig, TrainResult, materialization_metadata
from loop_pipeline.core.training.result import PIPES_CONFIG_EXTRA, result_from_messages
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking
from loop_pipeline.resources.trainer import TrainerLauncher

LORA_ADAPTER = dg.AssetKey("lora_adapter")
GPU_POOL = "gpu"  # the instance allows one step of this pool at a time: one training run per GPU
RESULTS_IO = "results_io"


def train_config_path(name: str, config_dir: Path) -> Path:
    """A name under ``<config_dir>/train/`` (``smollm2-clinc``) or a path to a YAML file."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"train config not found: {candidate}")
        return candidate
    path = Path(config_dir) / "train" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"train config {name!r} not found in {path.parent}; known: {known}")
    return path


def run_train_config(
    path: Path, dataset: DatasetVersion, models_root: Path, tracking: TrackingTarget, run_id: str, max_steps: Optional[int]
) -> TrainConfig:
    """The YAML with what this run decides: the dataset version it was handed, a fresh output
    folder, the run's MLflow store, the base-model cache (unless the file names one) and the step
    cap. Validated here, so a bad file fails before a process or a pod starts."""
    overrides: dict[str, Any] = {
        # The version folder replaces any data files the YAML names: lineage comes from the graph.
        "data": {"version_dir": dataset.path, "sft": None, "kto": None, "dpo": None},
        "output_dir": str(models_root / "runs" / f"{dataset.version}-{run_id[:8]}"),
        "tracking": {"tracking_uri": tracking.tracking_uri, "artifact_root": tracking.artifact_root},
    }
    if max_steps is not None:
        overrides["sft"] = {"max_steps": max_steps}
    config = TrainConfig.from_yaml(path, overrides)
    if not config.model.cache_dir:
        config = config.with_overrides({"model": {"cache_dir": str(models_root)}}, source=str(path))
    config.check_runnable()
    return config


def trained_adapter(result: TrainResult, dataset: DatasetVersion, train_config: Path, max_length: int) -> TrainedAdapter:
    return TrainedAdapter(**result.to_dict(), dataset_path=dataset.path, train_config=str(train_config), max_length=max_length)


def adapter_metadata(result: TrainResult, config: TrainConfig, path: Path) -> dict[str, Any]:
    """The run's figures and paths, the YAML it started from and the effective config (without
    the tracking URI, which may carry credentials)."""
    effective = config.to_dict()
    effective["tracking"].pop("tracking_uri", None)
    return {
        **materialization_metadata(result),
        "train_config": dg.MetadataValue.path(str(path)),
        "config/train": dg.MetadataValue.json(effective),
    }


class LoraAdapterConfig(dg.Config):
    train_config: Optional[str] = Field(
        default=None,
        description="A name under configs/train/ or a YAML path (default: the trainer resource's default_train_config).",
    )
    max_steps: Optional[int] = Field(default=None, description="Override sft.max_steps (a quick run).")


@dg.asset(
    key=LORA_ADAPTER,
    group_name="training",
    ins={"training_datasets": dg.AssetIn(key=TRAINING_DATASETS, input_manager_key=RESULTS_IO)},
    io_manager_key=RESULTS_IO,
    pool=GPU_POOL,
    kinds={"pytorch", "huggingface", "mlflow"},
    description="LoRA SFT (+ optional KTO/DPO) of the base model on the dataset version training_datasets "
    "materialized, run by `python -m loop_pipeline.core.training --pipes` through Dagster Pipes; loss and "
    "tokens/s stream into this run's log, the adapter and the merged model go to an MLflow run "
    "(experiment loop-training).",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    training_datasets: DatasetVersion,
    configs: LoopConfigs,
    storage: LoopStorage,
    mlflow: MlflowTracking,
    trainer: TrainerLauncher,
) -> dg.Output[TrainedAdapter]:
    path = train_config_path(config.train_config or trainer.default_train_config, Path(configs.config_dir))
    train_config = run_train_config(
        path, training_datasets, storage.models_root, mlflow.target(), context.run_id, config.max_steps
    )
    context.log.info(f"training on dataset {training_datasets.version} with {path} -> {train_config.output_dir}")
    launched = trainer.launch(context, extras={PIPES_CONFIG_EXTRA: train_config.to_dict()}, env={})
    result = result_from_messages(launched.get_custom_messages())
    return dg.Output(
        trained_adapter(result, training_datasets, path, train_config.sft.max_length),
        metadata=adapter_metadata(result, train_config, path),
        data_version=dg.DataVersion(result.mlflow_run_id) if result.mlflow_run_id else None,
    )
