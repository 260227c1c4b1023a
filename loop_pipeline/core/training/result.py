"""What one training run produced, how it travels back to the Dagster asset, and what the asset
records about it."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter_path: str
    base_model: str  # as configured (a packaged name, a folder or an HF id)
    base_model_path: str  # what was loaded
    dataset_version: str
    steps: int  # optimizer steps, all stages
    sft_steps: int
    negative_stage: str
    negative_steps: int
    initial_loss: Optional[float]  # SFT, first logged step
    final_loss: Optional[float]  # SFT, last logged step
    negative_final_loss: Optional[float]
    tokens: int  # SFT tokens trained on (prompt + completion, no padding)
    tokens_per_s: float  # per second of SFT training
    seconds_per_step: float  # SFT
    train_seconds: float
    peak_rss_mb: float
    peak_gpu_mb: Optional[float]  # CUDA only
    dtype: str
    device: str
    system_prompt: str  # keep | drop | none: what serving and evaluation must do to prompts
    sft_adapter_path: Optional[str] = None  # the SFT adapter, when a negatives stage followed
    merged_path: Optional[str] = None
    mlflow_run_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


METADATA_KEYS = (
    "base_model", "base_model_path", "dataset_version", "steps", "sft_steps", "negative_stage", "negative_steps",
    "initial_loss", "final_loss", "negative_final_loss", "tokens", "tokens_per_s", "seconds_per_step", "train_seconds",
    "peak_rss_mb", "peak_gpu_mb", "dtype", "device", "system_prompt", "adapter_path", "merged_path", "mlflow_run_id",
)


def materialization_metadata(result: TrainResult) -> dict[str, Any]:
    """What the Dagster asset records about a training run (unset values left out)."""
    values = result.to_dict()
    return {key: values[key] for key in METADATA_KEYS if values[key] is not None}


# How the trainer process and the lora_adapter asset talk over Dagster Pipes: the config goes out
# in the extras, the result comes back as one custom message.
PIPES_CONFIG_EXTRA = "train_config"
PIPES_RESULT_MESSAGE = "train_result"


def result_from_messages(messages: Sequence[Any]) -> TrainResult:
    """The TrainResult among the trainer's Pipes custom messages (exactly one is expected)."""
    found = [m[PIPES_RESULT_MESSAGE] for m in messages if isinstance(m, Mapping) and PIPES_RESULT_MESSAGE in m]
    if len(found) != 1:
        raise RuntimeError(f"the trainer process sent {len(found)} results over Pipes (expected 1): {list(messages)[:3]!r}")
    return TrainResult.model_validate(found[0])
