"""The optional second stage: KTO or DPO on the negatives, continuing from the SFT adapter. The
reference model is the SFT model (base + SFT adapter, merged)."""

from __future__ import annotations

from pathlib import Path

from loop_pipeline.core.models import load_base_model
from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.data import negative_records
from loop_pipeline.core.training.reporting import Reporter
from loop_pipeline.core.training.sft import StageOutcome
from loop_pipeline.core.training.trainer_parts import common_args, metrics_callback, train_and_save


def _stage_classes(stage: str):
    if stage == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def run_negatives(
    config: TrainConfig, base: str, tokenizer, dtype, sft_adapter: Path, adapter_dir: Path, reporter: Reporter
) -> StageOutcome:
    """Train ``negatives.stage`` (kto / dpo) from the SFT adapter; save the result to ``adapter_dir``."""
    from datasets import Dataset
    from peft import PeftModel

    negatives = config.negatives
    stage = negatives.stage
    dataset = Dataset.from_list(negative_records(config.data, stage))
    policy = PeftModel.from_pretrained(load_base_model(base, dtype), str(sft_adapter), is_trainable=True)
    reference = PeftModel.from_pretrained(load_base_model(base, dtype), str(sft_adapter)).merge_and_unload()
    reference.eval()
    stage_config, stage_trainer = _stage_classes(stage)
    args = stage_config(
        **common_args(Path(config.output_dir) / f"{stage}_run"),
        max_steps=negatives.max_steps,
        per_device_train_batch_size=negatives.per_device_train_batch_size,
        learning_rate=negatives.learning_rate,
        beta=negatives.beta,
        max_length=config.sft.max_length,
        seed=config.sft.seed,
        logging_steps=config.sft.logging_steps,
    )
    callback = metrics_callback(stage, reporter)
    trainer = stage_trainer(
        model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[callback]
    )
    reporter.info(f"{stage}: {len(dataset)} examples, {negatives.max_steps} steps from the SFT adapter")
    seconds = train_and_save(trainer, tokenizer, adapter_dir)
    return StageOutcome(steps=int(trainer.state.global_step), losses=callback.losses, seconds=seconds)
