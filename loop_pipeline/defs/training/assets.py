"""Training stage: the latest dataset version -> a LoRA adapter (and merged model), trained in its
own process launched through Dagster Pipes (a local subprocess, or a Kubernetes GPU job)."""

import os
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import yaml
from pydantic import Field

from loop_pipeline.core.training import TrainConfig
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.resources import LoopStorage, MlflowTracking
from loop_pipeline.resources.trainer import TrainerLauncher
from loop_pipeline.settings import ConfigError, config_dir

LORA_ADAPTER = dg.AssetKey("lora_adapter")
GPU_POOL = "gpu"  # the instance allows one step of this pool at a time: one training run per GPU
DEFAULT_TRAIN_CONFIG = "smollm2-clinc"


def train_config_path(name: str) -> Path:
    """A name under configs/train/ (``smollm2-clinc``) or a path to a YAML file."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"train config not found: {candidate}")
        return candidate
    path = config_dir() / "train" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))
        raise ConfigError(f"train config {name!r} not found in {path.parent}; known: {known}")
    return path


def run_train_config(
    path: Path, storage: LoopStorage, mlflow: MlflowTracking, version: str, run_id: str, max_steps: Optional[int]
) -> dict[str, Any]:
    """The YAML with what this run decides: the dataset version, the output folder, the stores."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw["data"] = {
        **{k: v for k, v in (raw.get("data") or {}).items() if k not in ("version_dir", "sft", "kto", "dpo")},
        "version_dir": str(storage.datasets_root / version),
    }
    raw["model"] = {"cache_dir": str(storage.models_root), **(raw.get("model") or {})}
    raw["output_dir"] = str(storage.models_root / "runs" / f"{version}-{run_id[:8]}")
    raw["tracking"] = {**(raw.get("tracking") or {}), "tracking_uri": mlflow.tracking_uri, "artifact_root": mlflow.artifact_root}
    if max_steps is not None:
        raw["sft"] = {**(raw.get("sft") or {}), "max_steps": max_steps}
    try:
        TrainConfig.from_mapping(raw)  # fail here, before a process or a pod starts
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return raw


class LoraAdapterConfig(dg.Config):
    train_config: Optional[str] = Field(
        default=None,
        description="A name under configs/train/ or a YAML path (default: LOOP_TRAIN_CONFIG, else smollm2-clinc).",
    )
    max_steps: Optional[int] = Field(default=None, description="Override sft.max_steps (a quick run).")


@dg.asset(
    key=LORA_ADAPTER,
    group_name="training",
    deps=[TRAINING_DATASETS],
    pool=GPU_POOL,
    kinds={"pytorch", "huggingface", "mlflow"},
    description="LoRA SFT (+ optional KTO/DPO) of the base model on the latest dataset version, run by "
    "`python -m loop_pipeline.core.training --pipes` through Dagster Pipes; loss and tokens/s stream "
    "into this run's log, the adapter and the merged model go to an MLflow run (experiment loop-training).",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    storage: LoopStorage,
    mlflow: MlflowTracking,
    trainer: TrainerLauncher,
) -> dg.MaterializeResult:
    version = storage.latest_dataset_version()
    path = train_config_path(config.train_config or os.environ.get("LOOP_TRAIN_CONFIG") or DEFAULT_TRAIN_CONFIG)
    raw = run_train_config(path, storage, mlflow, version, context.run_id, config.max_steps)
    context.log.info(f"training on dataset {version} with {path} -> {raw['output_dir']}")
    result = trainer.launch(context, extras={"train_config": raw}, env={}).get_materialize_result()
    metadata = {key: value.value for key, value in result.metadata.items()}
    # What evaluation and serving read: the latest adapter, with the prompt transform it needs.
    storage.write_document("lora_adapter", {**metadata, "train_config": str(path)})
    return result
