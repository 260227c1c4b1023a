"""The train config: one YAML file (see ``configs/train/tiny.yaml``) validated as :class:`TrainConfig`.

Sections are strict (``true``, ``"8"`` or ``"yes"`` are not numbers or booleans here) so a typo in
a hand-written file fails at load time, naming the file and the field::

    configs/train/tiny.yaml: lora.r: Input should be greater than 0 (got -1)

What depends on where the run happens (``data.version_dir: latest``, ``model.cache_dir``, the
MLflow store) is filled by the caller: :meth:`TrainConfig.check_runnable` says what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from loop_pipeline.config import ConfigError, ConfigModel
from loop_pipeline.core.models import PACKAGED_MODELS, PromptTransform

DATASET_FILES = {"sft": "sft.parquet", "kto": "kto.parquet", "dpo": "dpo.parquet"}
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LATEST = "latest"  # data.version_dir placeholder: the newest dataset version, resolved by the caller

Text = Annotated[str, Field(min_length=1, pattern=r"\S")]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
ModuleNames = Annotated[list[Text], Field(min_length=1)]


class TrainSection(ConfigModel):
    model_config = ConfigDict(strict=True)


class ModelSection(TrainSection):
    base: Text  # a local folder, a Hugging Face id (offline cache) or a packaged name
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Where a packaged model (smollm2-135m-instruct) is converted once; filled by the caller.
    cache_dir: Optional[Text] = None


class LoraSection(TrainSection):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], ModuleNames] = list(DEFAULT_TARGET_MODULES)
    # Adapt only the top N transformer layers (null: all). Backpropagation stops below the lowest
    # adapted layer, so a CPU step costs less; the lower layers' features are kept as they are.
    top_layers: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _top_layers_need_module_names(self) -> "LoraSection":
        if self.top_layers and isinstance(self.target_modules, str):
            raise ValueError("top_layers needs target_modules as a list of module names (peft cannot restrict 'all-linear' to layers)")
        return self


class SftSection(TrainSection):
    max_steps: Optional[PositiveInt] = None  # wins over num_train_epochs
    num_train_epochs: PositiveNumber = 1.0
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: PositiveNumber = 2e-4
    max_length: PositiveInt = 512
    seed: int = Field(42, ge=0)
    logging_steps: PositiveInt = 10
    packing: bool = False
    # trl turns it on by default; for a 135M model memory is not the limit and it costs ~2x compute.
    gradient_checkpointing: bool = False
    # model: the model's own causal-LM loss; completion: the same value with the output head applied
    # only at the completion's positions (much less compute for short answers); trl: trl's loss.
    loss: Literal["model", "completion", "trl"] = "model"


class NegativesSection(TrainSection):
    stage: Literal["none", "kto", "dpo"] = "none"
    max_steps: PositiveInt = 50
    beta: PositiveNumber = 0.1
    learning_rate: PositiveNumber = 5e-5
    per_device_train_batch_size: PositiveInt = 8


class DataSection(TrainSection):
    version_dir: Optional[Text] = None  # a dataset version folder (sft/kto/dpo.parquet), or latest
    sft: Optional[Text] = None  # explicit files win over version_dir
    kto: Optional[Text] = None
    dpo: Optional[Text] = None
    # drop: train without the app's system prompt (the fine-tuned model no longer needs the
    # instructions and label list; serving and evaluation apply the same transform).
    # none: as drop, and no chat-template default system turn either (fewest tokens).
    system_prompt: PromptTransform = "keep"

    @model_validator(mode="after")
    def _has_a_source(self) -> "DataSection":
        if not (self.version_dir or self.sft):
            raise ValueError("set data.version_dir (a dataset version folder) or data.sft (a parquet file)")
        return self

    def version_folder(self) -> Path | None:
        if not self.version_dir:
            return None
        if self.version_dir == LATEST:
            raise ConfigError(
                "data.version_dir: 'latest' must be resolved to a dataset version folder by the caller "
                "(loop train and the lora_adapter asset do it)"
            )
        return Path(self.version_dir).expanduser()

    def path(self, name: str) -> Path | None:
        """The parquet file of dataset ``name`` (sft / kto / dpo): explicit, else in the version folder."""
        explicit = getattr(self, name)
        if explicit:
            return Path(explicit).expanduser()
        folder = self.version_folder()
        return folder / DATASET_FILES[name] if folder is not None else None

    def dataset_version(self) -> str:
        """The version's name: its folder, or the folder holding an explicit sft file."""
        folder = self.version_folder()
        if folder is not None:
            return folder.resolve().name
        return Path(self.sft).expanduser().resolve().parent.name


class ExportSection(TrainSection):
    merged: bool = True  # also save base + adapter merged into one model folder
    merged_dtype: Literal["bfloat16", "float32", "same"] = "bfloat16"  # same: the training dtype


class TrackingSection(TrainSection):
    enabled: bool = True
    experiment: Text = "loop-training"
    # Filled by the caller (LOOP_MLFLOW_* or SQLite under LOOP_HOME) when left empty.
    tracking_uri: Optional[Text] = None
    artifact_root: Optional[Text] = None


class TrainConfig(TrainSection):
    model: ModelSection
    output_dir: Text
    lora: LoraSection = LoraSection()
    sft: SftSection = SftSection()
    negatives: NegativesSection = NegativesSection()
    data: DataSection
    export: ExportSection = ExportSection()
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_take_defaults(cls, raw: Any) -> Any:
        # A YAML section whose keys are all commented out loads as null: it means "the defaults".
        if isinstance(raw, dict):
            return {key: ({} if value is None and key != "output_dir" else value) for key, value in raw.items()}
        return raw

    @model_validator(mode="after")
    def _negatives_have_data(self) -> "TrainConfig":
        stage = self.negatives.stage
        if stage != "none" and not (self.data.version_dir or getattr(self.data, stage)):
            raise ValueError(f"data.{stage}: required by negatives.stage={stage!r} (or set data.version_dir)")
        return self

    def check_runnable(self) -> None:
        """Raise a ConfigError for what the caller had to fill and did not: the dataset version
        behind ``latest``, the cache of a packaged base model, the MLflow store."""
        self.data.version_folder()
        if self.model.base in PACKAGED_MODELS and not self.model.cache_dir:
            raise ConfigError(
                f"model.cache_dir: required for the packaged model {self.model.base!r} (it is converted once into that folder)"
            )
        if self.tracking.enabled and not (self.tracking.tracking_uri and self.tracking.artifact_root):
            raise ConfigError("tracking: enabled without tracking.tracking_uri and tracking.artifact_root (or set enabled: false)")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
