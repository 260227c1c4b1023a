"""What the SFT and the KTO/DPO stages share around a transformers ``Trainer``: the common
arguments, the callback that feeds the reporter, and train-then-save."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loop_pipeline.core.training.reporting import Reporter


def common_args(output: Path) -> dict[str, Any]:
    """Trainer arguments both stages use (the model is already loaded in the chosen dtype)."""
    import torch

    return {
        "output_dir": str(output),
        "save_strategy": "no",
        "report_to": [],
        "logging_first_step": True,
        "disable_tqdm": False,  # the progress bar with ETA, on stderr
        "bf16": False,  # no autocast: the weights are already in the training dtype
        "fp16": False,
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }


def metrics_callback(stage: str, reporter: Reporter):
    """A TrainerCallback that collects the logged losses (``.losses``) and hands every log to the
    reporter, with tokens/s when the trainer counts tokens (set ``.trainer`` once it exists).
    Built lazily so this package imports without transformers."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self):
            self.losses: list[float] = []
            self.trainer = None
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


def train_and_save(trainer, tokenizer, adapter_dir: Path) -> float:
    """Train, save the adapter with its tokenizer, return the training seconds."""
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return seconds
