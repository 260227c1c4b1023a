"""The SFT stage: a LoRA adapter trained on the curated ``sft`` conversations, loss on the answer only.

Loss path: trl 1.16's SFTTrainer computes the loss with a fused, tiled LM head by default, which is
slow on CPU (measured ~2.5x the model's own loss on SmolLM2-135M). ``sft.loss: model`` (the
default) makes the trainer call the model's own causal-LM loss on the same labels (prompt tokens
at -100, so the loss is on the completion only); ``sft.loss: trl`` keeps trl's fused head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from loop_pipeline.core.models import load_base_model
from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.data import SFT_COLUMNS, read_rows, sft_rows
from loop_pipeline.core.training.reporting import Reporter
from loop_pipeline.core.training.trainer_parts import common_args, metrics_callback, train_and_save


@dataclass(frozen=True)
class StageOutcome:
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0  # counted by the SFT stage only
    device: str = ""


def has_generation_markers(tokenizer) -> bool:
    """Whether the chat template marks the assistant's turns (then trl masks by ``messages``)."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "{% generation %}" in template or "{%- generation %}" in template


def completion_loss(model, inputs, num_items_in_batch=None):
    """The causal-LM loss with the output head applied only at the labelled positions (the
    completion). A label is a few tokens after a longer prompt, so most of the head's compute
    (positions x vocabulary) is skipped; the value is the model's own loss."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")).last_hidden_state
    labels = inputs["labels"][:, 1:]
    labelled = labels != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][labelled])
    total = torch.nn.functional.cross_entropy(logits.float(), labels[labelled], reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else labelled.sum().clamp(min=1))


def sft_trainer_class(loss: str):
    """SFTTrainer that counts the trained tokens; with loss='model' the model's own causal-LM loss
    replaces trl's fused LM head (same labels, so still completion-only)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                if "attention_mask" in inputs:
                    self.tokens_seen += int(inputs["attention_mask"].sum())
                else:
                    self.tokens_seen += int(inputs["input_ids"].numel())
            if loss == "trl":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if loss == "completion" and model.training and not return_outputs:
                return completion_loss(model, inputs, num_items_in_batch)
            inputs = {**inputs, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CountingSFTTrainer


def _sft_args(config: TrainConfig, prompt_completion: bool):
    from trl import SFTConfig

    sft = config.sft
    return SFTConfig(
        **common_args(Path(config.output_dir) / "sft_run"),
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


def _lora_config(config: TrainConfig, n_layers: int):
    from peft import LoraConfig

    lora = config.lora
    # Only the top layers: nothing below them needs a gradient, so backpropagation stops there.
    layers = list(range(max(0, n_layers - lora.top_layers), n_layers)) if lora.top_layers else None
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        layers_to_transform=layers, task_type="CAUSAL_LM",
    )


def run_sft(config: TrainConfig, base: str, tokenizer, dtype, adapter_dir: Path, reporter: Reporter) -> StageOutcome:
    """Train the LoRA adapter on ``data.sft`` and save it (with the tokenizer) to ``adapter_dir``."""
    from datasets import Dataset

    rows = read_rows(config.data.path("sft"), SFT_COLUMNS, "data.sft")
    prompt_completion = not has_generation_markers(tokenizer)
    dataset = Dataset.from_list(sft_rows(rows, prompt_completion, config.data.system_prompt))
    callback = metrics_callback("sft", reporter)
    model = load_base_model(base, dtype)
    trainer = sft_trainer_class(config.sft.loss)(
        model=model,
        args=_sft_args(config, prompt_completion),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora_config(config, model.config.num_hidden_layers),
        callbacks=[callback],
    )
    callback.trainer = trainer
    sft = config.sft
    per_step = sft.per_device_train_batch_size * sft.gradient_accumulation_steps
    planned = sft.max_steps or math.ceil(math.ceil(len(dataset) / per_step) * sft.num_train_epochs)
    reporter.info(
        f"sft: {len(dataset)} examples, {planned} steps planned, "
        f"batch {sft.per_device_train_batch_size} x {sft.gradient_accumulation_steps}, {dtype}, {trainer.args.device}"
    )
    seconds = train_and_save(trainer, tokenizer, adapter_dir)
    return StageOutcome(
        steps=int(trainer.state.global_step),
        losses=callback.losses,
        seconds=seconds,
        tokens=int(trainer.tokens_seen),
        device=str(trainer.args.device),
    )
