"""LoRA fine-tuning with peft + trl: SFT on the curated ``sft`` dataset, then optionally KTO or DPO
on the negatives, continuing from the SFT adapter.

One YAML file (see ``configs/train/tiny.yaml``) -> :class:`TrainConfig` -> :func:`main` ->
:class:`TrainResult`. ``python -m loop_pipeline.core.training --config FILE`` runs it and prints the
result as one JSON line on stdout (progress bar and trainer logs go to stderr).

Loss path (SFT): trl 1.16's SFTTrainer computes the loss with a fused, tiled LM head by default,
which is slow on CPU (measured ~2.5x the model's own loss on SmolLM2-135M). ``sft.loss: model``
(the default) makes the trainer call the model's own causal-LM loss on the same labels (prompt
tokens at -100, so the loss is on the completion only); ``sft.loss: trl`` keeps trl's fused head.

Heavy libraries (torch, transformers, peft, trl, datasets) are imported inside functions only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

import loop_pipeline  # noqa: F401  (offline / no-telemetry environment before HF imports)
from loop_pipeline.config import ConfigError
from loop_pipeline.core.models import load_base_model, load_tokenizer, prepare_prompt, resolve_dtype

DATASET_FILES = {"sft": "sft.parquet", "kto": "kto.parquet", "dpo": "dpo.parquet"}
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------------------------
# Configuration


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "must be a positive integer"
    return None


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a non-negative integer"
    return None


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return "must be a positive number"
    return None


def _probability(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        return "must be a number in [0, 1)"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional_check(value: Any) -> str | None:
        return None if value is None else check(value)

    return optional_check


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def choice_check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {list(choices)}, got {value!r}"

    return choice_check


def _modules(value: Any) -> str | None:
    if value == "all-linear":
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return None
    return "must be a non-empty list of module names, or 'all-linear'"


def _checked(default: Any, check: Callable[[Any], str | None], **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"check": check}, **kwargs)
    return field(default=default, metadata={"check": check}, **kwargs)


def _from_mapping(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass ``cls`` from ``raw``: unknown keys and bad values raise a ConfigError naming
    the field path (``lora.r: must be a positive integer``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {}
    for name, spec in known.items():
        path = f"{section}.{name}"
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: required")
            continue
        value = raw[name]
        check = spec.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{path}: {problem}")
        values[name] = value
    return cls(**values)


@dataclass(frozen=True)
class ModelSection:
    base: str = field(metadata={"check": _text})  # a local folder or a Hugging Face id (offline cache)
    dtype: str = _checked("auto", _choice("auto", "float32", "bfloat16"))
    # where a packaged model (smollm2-135m-instruct) is converted once; null: $LOOP_HOME/models
    cache_dir: str | None = _checked(None, _optional(_text))


@dataclass(frozen=True)
class LoraSection:
    r: int = _checked(16, _positive_int)
    alpha: int = _checked(32, _positive_int)
    dropout: float = _checked(0.05, _probability)
    target_modules: Any = _checked(list(DEFAULT_TARGET_MODULES), _modules)


@dataclass(frozen=True)
class SftSection:
    max_steps: int | None = _checked(None, _optional(_positive_int))  # wins over num_train_epochs
    num_train_epochs: float = _checked(1.0, _positive_number)
    per_device_train_batch_size: int = _checked(8, _positive_int)
    gradient_accumulation_steps: int = _checked(1, _positive_int)
    learning_rate: float = _checked(2e-4, _positive_number)
    max_length: int = _checked(512, _positive_int)
    seed: int = _checked(42, _non_negative_int)
    logging_steps: int = _checked(10, _positive_int)
    packing: bool = _checked(False, _boolean)
    # trl turns it on by default; for a 135M model memory is not the limit and it costs ~2x compute.
    gradient_checkpointing: bool = _checked(False, _boolean)
    loss: str = _checked("model", _choice("model", "trl"))


@dataclass(frozen=True)
class NegativesSection:
    stage: str = _checked("none", _choice("none", "kto", "dpo"))
    max_steps: int = _checked(50, _positive_int)
    beta: float = _checked(0.1, _positive_number)
    learning_rate: float = _checked(5e-5, _positive_number)
    per_device_train_batch_size: int = _checked(8, _positive_int)


@dataclass(frozen=True)
class DataSection:
    version_dir: str | None = _checked(None, _optional(_text))  # a dataset version folder (sft/kto/dpo.parquet), or latest
    sft: str | None = _checked(None, _optional(_text))  # explicit files win over version_dir
    kto: str | None = _checked(None, _optional(_text))
    dpo: str | None = _checked(None, _optional(_text))
    # drop: train without the app's system prompt (the fine-tuned model no longer needs the
    # instructions and label list; serving and evaluation apply the same transform).
    system_prompt: str = _checked("keep", _choice("keep", "drop"))

    def version_folder(self) -> Path | None:
        """``latest``: the version `loop datasets build` made last under $LOOP_HOME/datasets."""
        if not self.version_dir:
            return None
        if self.version_dir == "latest":
            from loop_pipeline.settings import paths

            marker = paths().datasets / "LATEST"
            if not marker.is_file():
                raise ConfigError(f"data.version_dir: latest, but {marker} is missing: build a dataset version first (loop datasets build)")
            return paths().datasets / marker.read_text(encoding="utf-8").strip()
        return Path(self.version_dir).expanduser()

    def path(self, name: str) -> Path | None:
        explicit = getattr(self, name)
        if explicit:
            return Path(explicit).expanduser()
        folder = self.version_folder()
        if folder is not None:
            return folder / DATASET_FILES[name]
        return None


@dataclass(frozen=True)
class ExportSection:
    merged: bool = _checked(True, _boolean)  # also save base + adapter merged into one model folder
    merged_dtype: str = _checked("bfloat16", _choice("bfloat16", "float32", "same"))  # same: the training dtype


@dataclass(frozen=True)
class TrackingSection:
    enabled: bool = _checked(True, _boolean)
    experiment: str = _checked("loop-training", _text)
    # null: LOOP_MLFLOW_TRACKING_URI / LOOP_MLFLOW_ARTIFACT_ROOT, else SQLite under LOOP_HOME
    tracking_uri: str | None = _checked(None, _optional(_text))
    artifact_root: str | None = _checked(None, _optional(_text))


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection
    output_dir: str
    lora: LoraSection = field(default_factory=LoraSection)
    sft: SftSection = field(default_factory=SftSection)
    negatives: NegativesSection = field(default_factory=NegativesSection)
    data: DataSection = field(default_factory=DataSection)
    export: ExportSection = field(default_factory=ExportSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    _SECTIONS = {
        "model": ModelSection,
        "lora": LoraSection,
        "sft": SftSection,
        "negatives": NegativesSection,
        "data": DataSection,
        "export": ExportSection,
        "tracking": TrackingSection,
    }

    @classmethod
    def from_mapping(cls, raw: Any) -> "TrainConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"train config: expected a mapping at the top level, got {type(raw).__name__}")
        known = [*cls._SECTIONS, "output_dir"]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"train config: unknown key(s) {unknown}; known: {sorted(known)}")
        if "model" not in raw:
            raise ConfigError("model: required (model.base: a local folder or a Hugging Face id)")
        if _text(raw.get("output_dir")):
            raise ConfigError("output_dir: must be a non-empty string")
        sections = {name: _from_mapping(kind, raw.get(name), name) for name, kind in cls._SECTIONS.items()}
        data: DataSection = sections["data"]
        if not (data.version_dir or data.sft):
            raise ConfigError("data: set data.version_dir (a dataset version folder) or data.sft (a parquet file)")
        stage = sections["negatives"].stage
        if stage != "none" and not (data.version_dir or getattr(data, stage)):
            raise ConfigError(f"data.{stage}: required by negatives.stage={stage!r} (or set data.version_dir)")
        return cls(output_dir=raw["output_dir"], **sections)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"train config not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        try:
            return cls.from_mapping(raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class TrainResult:
    adapter_path: str
    base_model: str  # as configured (a packaged name, a folder or an HF id)
    base_model_path: str  # what was loaded
    dataset_version: str
    steps: int  # optimizer steps, all stages
    sft_steps: int
    negative_stage: str
    negative_steps: int
    initial_loss: float | None  # SFT, first logged step
    final_loss: float | None  # SFT, last logged step
    negative_final_loss: float | None
    tokens: int  # SFT tokens trained on (prompt + completion, no padding)
    tokens_per_s: float  # per second of SFT training
    seconds_per_step: float  # SFT
    train_seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None  # CUDA only
    dtype: str
    device: str
    system_prompt: str  # keep | drop: what serving and evaluation must do to prompts
    sft_adapter_path: str | None = None  # the SFT adapter, when a negatives stage followed
    merged_path: str | None = None
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Where progress goes (besides the trainer's own progress bar on stderr)


class Reporter:
    """Receives progress lines and logged metrics (the base class drops them)."""

    def info(self, message: str) -> None:
        return None

    def metrics(self, stage: str, step: int, max_steps: int, values: Mapping[str, float]) -> None:
        return None


class StderrReporter(Reporter):
    def info(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class FanoutReporter(Reporter):
    def __init__(self, reporters: Sequence[Reporter]):
        self.reporters = list(reporters)

    def info(self, message: str) -> None:
        for reporter in self.reporters:
            reporter.info(message)

    def metrics(self, stage: str, step: int, max_steps: int, values: Mapping[str, float]) -> None:
        for reporter in self.reporters:
            reporter.metrics(stage, step, max_steps, values)


class PipesReporter(Reporter):
    """Streams progress to the Dagster event log of the run that launched this process."""

    def __init__(self, pipes):
        self.pipes = pipes

    def info(self, message: str) -> None:
        self.pipes.log.info(message)

    def metrics(self, stage: str, step: int, max_steps: int, values: Mapping[str, float]) -> None:
        shown = "  ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.pipes.log.info(f"{stage} step {step}/{max_steps}: {shown}")


class MlflowRunReporter(Reporter):
    """One MLflow run per training: params, per-step metrics, final figures, adapter + merged model."""

    def __init__(self, config: TrainConfig, dataset_version: str):
        from loop_pipeline.core.tracking import TrackingTarget

        default = TrackingTarget.default()
        tracking = config.tracking
        self.target = TrackingTarget(tracking.tracking_uri or default.tracking_uri, tracking.artifact_root or default.artifact_root)
        self.client = self.target.client()
        experiment = self.target.experiment_id(self.client, tracking.experiment)
        tags = {
            "loop.stage": "training",
            "base_model": config.model.base,
            "dataset_version": dataset_version,
            "negative_stage": config.negatives.stage,
            "system_prompt": config.data.system_prompt,
        }
        run = self.client.create_run(experiment, run_name=f"lora-{dataset_version}", tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = _flatten(config.to_dict())
        params.pop("tracking.tracking_uri", None)  # may carry credentials
        names = sorted(params)
        for start in range(0, len(names), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=[Param(k, str(params[k])[:6000]) for k in names[start:start + 100]])

    def metrics(self, stage: str, step: int, max_steps: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(f"{stage}/{k}", float(v), now, step) for k, v in values.items() if math.isfinite(v)]
        )

    def finish(self, result: TrainResult, output: Path) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = {
            "steps": result.steps,
            "tokens_per_s": result.tokens_per_s,
            "seconds_per_step": result.seconds_per_step,
            "train_seconds": result.train_seconds,
            "peak_rss_mb": result.peak_rss_mb,
            "peak_gpu_mb": result.peak_gpu_mb,
            "initial_loss": result.initial_loss,
            "final_loss": result.final_loss,
            "negative_final_loss": result.negative_final_loss,
        }
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in final.items() if v is not None])
        self.client.log_artifacts(self.run_id, result.adapter_path, "adapter")
        if result.merged_path:
            self.client.log_artifacts(self.run_id, result.merged_path, "merged_model")
        for name in ("train_result.json", "train_config.json"):
            self.client.log_artifact(self.run_id, str(output / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(item, f"{name}."))
        else:
            out[name] = item
    return out


# --------------------------------------------------------------------------------------------
# Pieces








def has_generation_markers(tokenizer) -> bool:
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "{% generation %}" in template or "{%- generation %}" in template


def _read_rows(path: Path, columns: Sequence[str], field_path: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # not polars: the trainer runs on GPU images without it

    if not path.is_file():
        raise ConfigError(f"{field_path}: file not found: {path}")
    schema = pq.read_schema(path)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ConfigError(f"{field_path}: {path} lacks column(s) {missing}; has {schema.names}")
    table = pq.read_table(path, columns=list(columns))
    if table.num_rows == 0:
        raise ConfigError(f"{field_path}: {path} has no rows")
    return table.to_pylist()




def sft_rows(messages_rows: list[dict[str, Any]], prompt_completion: bool, system_prompt: str = "keep") -> list[dict[str, Any]]:
    """Conversational rows -> prompt/completion (all turns but the last / the last assistant turn),
    or kept as ``messages`` (for templates with generation markers)."""
    out = []
    for row in messages_rows:
        messages = prepare_prompt(row["messages"], system_prompt)
        if not prompt_completion:
            out.append({"messages": messages})
            continue
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ConfigError("data.sft: every conversation must end with an assistant turn")
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def _plain_messages(value: Any) -> list[dict[str, str]]:
    return prepare_prompt(value, "keep")


class _MetricsCallback:
    """Collects the trainer's logged losses and hands every log to the reporter (a TrainerCallback,
    built lazily so this module imports without transformers)."""

    def __new__(cls, stage: str, reporter: Reporter):
        from transformers import TrainerCallback

        class MetricsCallback(TrainerCallback):
            def __init__(self):
                self.losses: list[float] = []
                self.trainer = None  # set after the trainer exists (for the token count)
                self.started = time.perf_counter()

            def on_train_begin(self, args, state, control, **kwargs):
                self.started = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs:
                    return
                if "loss" in logs:
                    self.losses.append(float(logs["loss"]))
                values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                elapsed = time.perf_counter() - self.started
                tokens = getattr(self.trainer, "tokens_seen", 0)
                if tokens and elapsed > 0:
                    values["tokens_per_s"] = tokens / elapsed
                reporter.metrics(stage, int(state.global_step), int(state.max_steps), values)

        return MetricsCallback()


def _sft_trainer_class(loss: str):
    from transformers import Trainer
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """Counts the trained tokens; with loss='model' the model's own causal-LM loss replaces trl's
        fused LM head (same labels, so still completion-only)."""

        tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                if "attention_mask" in inputs:
                    self.tokens_seen += int(inputs["attention_mask"].sum())
                else:
                    self.tokens_seen += int(inputs["input_ids"].numel())
            if loss == "trl":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = {**inputs, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CountingSFTTrainer


def _common_args(config: TrainConfig, output: Path, dtype) -> dict[str, Any]:
    import torch

    return {
        "output_dir": str(output),
        "save_strategy": "no",
        "report_to": [],
        "logging_first_step": True,
        "disable_tqdm": False,  # the progress bar with ETA, on stderr
        "bf16": False,  # the model is loaded in the chosen dtype; no autocast
        "fp16": False,
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / (1024 * 1024), 1)


def _dataset_version(config: TrainConfig) -> str:
    if config.data.version_dir:
        return config.data.version_folder().resolve().name
    return Path(config.data.sft).expanduser().resolve().parent.name


# --------------------------------------------------------------------------------------------
# Training


def run_sft(config: TrainConfig, base: str, tokenizer, dtype, adapter_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    rows = _read_rows(config.data.path("sft"), ["messages"], "data.sft")
    prompt_completion = not has_generation_markers(tokenizer)
    dataset = Dataset.from_list(sft_rows(rows, prompt_completion, config.data.system_prompt))
    model = load_base_model(base, dtype)
    sft = config.sft
    args = SFTConfig(
        **_common_args(config, Path(config.output_dir) / "sft_run", dtype),
        max_steps=sft.max_steps or -1,
        num_train_epochs=sft.num_train_epochs,
        per_device_train_batch_size=sft.per_device_train_batch_size,
        gradient_accumulation_steps=sft.gradient_accumulation_steps,
        learning_rate=sft.learning_rate,
        max_length=sft.max_length,
        seed=sft.seed,
        logging_steps=sft.logging_steps,
        packing=sft.packing,
        gradient_checkpointing=sft.gradient_checkpointing,
        completion_only_loss=True if prompt_completion else None,
        assistant_only_loss=not prompt_completion,
    )
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    callback = _MetricsCallback("sft", reporter)
    trainer = _sft_trainer_class(sft.loss)(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    callback.trainer = trainer
    per_step = sft.per_device_train_batch_size * sft.gradient_accumulation_steps
    planned = sft.max_steps or math.ceil(math.ceil(len(dataset) / per_step) * sft.num_train_epochs)
    reporter.info(
        f"sft: {len(dataset)} examples, {planned} steps planned, "
        f"batch {sft.per_device_train_batch_size} x {sft.gradient_accumulation_steps}, {dtype}, {trainer.args.device}"
    )
    seconds = _train_and_save(trainer, tokenizer, adapter_dir)
    return {
        "steps": int(trainer.state.global_step),
        "losses": callback.losses,
        "seconds": seconds,
        "tokens": trainer.tokens_seen,
        "device": str(trainer.args.device),
    }


def _train_and_save(trainer, tokenizer, adapter_dir: Path) -> float:
    """Train, save the adapter with its tokenizer, return the training seconds."""
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return seconds


def run_negatives(
    config: TrainConfig, base: str, tokenizer, dtype, sft_adapter: Path, adapter_dir: Path, reporter: Reporter
) -> dict[str, Any]:
    """KTO or DPO continuing from the SFT adapter; the reference model is the SFT model (merged)."""
    from datasets import Dataset
    from peft import PeftModel

    negatives = config.negatives
    stage = negatives.stage
    mode = config.data.system_prompt
    if stage == "kto":
        from trl import KTOConfig as StageConfig
        from trl import KTOTrainer as StageTrainer

        rows = _read_rows(config.data.path("kto"), ["prompt", "completion", "label"], "data.kto")
        records = [
            {"prompt": prepare_prompt(r["prompt"], mode), "completion": _plain_messages(r["completion"]), "label": bool(r["label"])}
            for r in rows
        ]
    else:
        from trl import DPOConfig as StageConfig
        from trl import DPOTrainer as StageTrainer

        rows = _read_rows(config.data.path("dpo"), ["prompt", "chosen", "rejected"], "data.dpo")
        records = [
            {
                "prompt": prepare_prompt(r["prompt"], mode),
                "chosen": _plain_messages(r["chosen"]),
                "rejected": _plain_messages(r["rejected"]),
            }
            for r in rows
        ]
    dataset = Dataset.from_list(records)
    policy = PeftModel.from_pretrained(load_base_model(base, dtype), str(sft_adapter), is_trainable=True)
    reference = PeftModel.from_pretrained(load_base_model(base, dtype), str(sft_adapter)).merge_and_unload()
    reference.eval()
    args = StageConfig(
        **_common_args(config, Path(config.output_dir) / f"{stage}_run", dtype),
        max_steps=negatives.max_steps,
        per_device_train_batch_size=negatives.per_device_train_batch_size,
        learning_rate=negatives.learning_rate,
        beta=negatives.beta,
        max_length=config.sft.max_length,
        seed=config.sft.seed,
        logging_steps=config.sft.logging_steps,
    )
    callback = _MetricsCallback(stage, reporter)
    trainer = StageTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    reporter.info(f"{stage}: {len(dataset)} examples, {negatives.max_steps} steps from the SFT adapter")
    seconds = _train_and_save(trainer, tokenizer, adapter_dir)
    return {"steps": int(trainer.state.global_step), "losses": callback.losses, "seconds": seconds}


def save_merged(base: str, adapter: Path, target: Path, dtype, merged_dtype: str) -> Path:
    """Base + adapter merged into one plain model folder (what a server without peft loads)."""
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base_model(base, dtype), str(adapter)).merge_and_unload()
    if merged_dtype != "same":
        model = model.to(getattr(torch, merged_dtype))
    model.save_pretrained(target)
    load_tokenizer(str(adapter)).save_pretrained(target)
    return target


def main(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Train the LoRA adapter described by ``config``; the adapter lands in ``output_dir/adapter``,
    the merged model in ``output_dir/merged``, figures and artifacts in an MLflow run.

    torch's thread count is left as the caller set it (tests use 1)."""
    reporter = reporter or StderrReporter()
    # Fail fast on the data before loading any model.
    _read_rows(config.data.path("sft"), ["messages"], "data.sft")
    stage = config.negatives.stage
    if stage != "none":
        path = config.data.path(stage)
        if not path.is_file():
            raise ConfigError(f"data.{stage}: file not found: {path}")

    from loop_pipeline.core.models import resolve_base_model

    output = Path(config.output_dir).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    cache = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else None
    base = resolve_base_model(config.model.base, cache, progress=reporter.info)
    dataset_version = _dataset_version(config)
    tracker = MlflowRunReporter(config, dataset_version) if config.tracking.enabled else None
    if tracker:
        reporter = FanoutReporter([reporter, tracker])
        reporter.info(f"mlflow run {tracker.run_id} (experiment {config.tracking.experiment})")
    try:
        dtype = resolve_dtype(config.model.dtype)
        tokenizer = load_tokenizer(base)
        final_adapter = output / "adapter"
        sft_adapter = output / "sft_adapter" if stage != "none" else final_adapter

        sft = run_sft(config, base, tokenizer, dtype, sft_adapter, reporter)
        negative = {"steps": 0, "losses": [], "seconds": 0.0}
        if stage != "none":
            negative = run_negatives(config, base, tokenizer, dtype, sft_adapter, final_adapter, reporter)
        merged = None
        if config.export.merged:
            reporter.info("merging the adapter into the base model")
            merged = save_merged(base, final_adapter, output / "merged", dtype, config.export.merged_dtype)

        result = TrainResult(
            adapter_path=str(final_adapter.resolve()),
            base_model=config.model.base,
            base_model_path=str(base),
            dataset_version=dataset_version,
            steps=sft["steps"] + negative["steps"],
            sft_steps=sft["steps"],
            negative_stage=stage,
            negative_steps=negative["steps"],
            initial_loss=sft["losses"][0] if sft["losses"] else None,
            final_loss=sft["losses"][-1] if sft["losses"] else None,
            negative_final_loss=negative["losses"][-1] if negative["losses"] else None,
            tokens=int(sft["tokens"]),
            tokens_per_s=round(sft["tokens"] / sft["seconds"], 1) if sft["seconds"] > 0 else 0.0,
            seconds_per_step=round(sft["seconds"] / sft["steps"], 4) if sft["steps"] else 0.0,
            train_seconds=round(sft["seconds"] + negative["seconds"], 3),
            peak_rss_mb=_peak_rss_mb(),
            peak_gpu_mb=_peak_gpu_mb(),
            dtype=str(dtype).replace("torch.", ""),
            device=sft["device"],
            system_prompt=config.data.system_prompt,
            sft_adapter_path=str(sft_adapter.resolve()) if stage != "none" else None,
            merged_path=str(merged.resolve()) if merged else None,
            mlflow_run_id=tracker.run_id if tracker else None,
        )
        (output / "train_result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        (output / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        if tracker:
            tracker.finish(result, output)
    except BaseException:
        if tracker:
            tracker.fail()
        raise
    reporter.info(
        f"trained {result.steps} steps in {result.train_seconds:.1f} s: loss {result.initial_loss} -> {result.final_loss}, "
        f"{result.tokens_per_s:.0f} tokens/s, peak RSS {result.peak_rss_mb:.0f} MB"
    )
    return result


# --------------------------------------------------------------------------------------------
# Inference helper




# --------------------------------------------------------------------------------------------
# Entry point


def materialization_metadata(result: TrainResult) -> dict[str, Any]:
    """What the Dagster asset records about a training run."""
    keys = (
        "base_model", "base_model_path", "dataset_version", "steps", "sft_steps", "negative_stage", "negative_steps", "initial_loss",
        "final_loss", "negative_final_loss", "tokens", "tokens_per_s", "seconds_per_step", "train_seconds",
        "peak_rss_mb", "peak_gpu_mb", "dtype", "device", "system_prompt", "adapter_path", "merged_path", "mlflow_run_id",
    )
    values = result.to_dict()
    return {key: values[key] for key in keys if values[key] is not None}


def _run_under_pipes() -> int:
    """Launched by the ``lora_adapter`` asset: config from the Pipes extras, progress to the
    Dagster event log, the result as the asset's materialization."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        config = TrainConfig.from_mapping(pipes.get_extra("train_config"))
        with contextlib.redirect_stdout(sys.stderr):
            result = main(config, FanoutReporter([StderrReporter(), PipesReporter(pipes)]))
        pipes.report_asset_materialization(metadata=materialization_metadata(result), data_version=result.mlflow_run_id or None)
    # No result line on stdout here: the launching run's own output ends with its JSON line.
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loop_pipeline.core.training",
        description="LoRA SFT (+ optional KTO/DPO) on a dataset version; prints the result as one JSON line.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="train config YAML (see configs/train/tiny.yaml)")
    source.add_argument("--pipes", action="store_true", help="launched by Dagster Pipes: the config comes in the extras")
    args = parser.parse_args(argv)
    if args.pipes:
        return _run_under_pipes()
    try:
        config = TrainConfig.from_yaml(args.config)
        # Trainer logs are printed to stdout: keep stdout for the one result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = main(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
