"""One training run: check the inputs, SFT, the optional KTO/DPO stage, the merged export, the
result (``output_dir/train_result.json``) and its MLflow run."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Optional

from loop_pipeline.core.models import load_tokenizer, resolve_base_model, resolve_dtype
from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.data import check_files
from loop_pipeline.core.training.export import save_merged
from loop_pipeline.core.training.preference import run_negatives
from loop_pipeline.core.training.reporting import FanoutReporter, MlflowRunReporter, Reporter, StderrReporter
from loop_pipeline.core.training.result import TrainResult
from loop_pipeline.core.training.sft import StageOutcome, run_sft


def main(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Train the LoRA adapter described by ``config``; the adapter lands in ``output_dir/adapter``,
    the merged model in ``output_dir/merged``, figures and artifacts in an MLflow run.

    torch's thread count is left as the caller set it (tests use 1)."""
    reporter = reporter or StderrReporter()
    # Fail fast on what the caller had to fill and on the data, before loading any model.
    config.check_runnable()
    check_files(config.data, config.negatives.stage)

    output = Path(config.output_dir).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else None
    base = resolve_base_model(config.model.base, cache_dir, progress=reporter.info)
    dataset_version = config.data.dataset_version()
    tracker = MlflowRunReporter(config, dataset_version) if config.tracking.enabled else None
    if tracker:
        reporter = FanoutReporter([reporter, tracker])
        reporter.info(f"mlflow run {tracker.run_id} (experiment {config.tracking.experiment})")
    try:
        result = _train(config, base, dataset_version, output, reporter, tracker.run_id if tracker else None)
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


def _train(
    config: TrainConfig, base: str, dataset_version: str, output: Path, reporter: Reporter, run_id: Optional[str]
) -> TrainResult:
    dtype = resolve_dtype(config.model.dtype)
    tokenizer = load_tokenizer(base)
    stage = config.negatives.stage
    final_adapter = output / "adapter"
    # With a second stage, the SFT adapter is kept apart: it is that stage's starting point.
    sft_adapter = output / "sft_adapter" if stage != "none" else final_adapter

    sft = run_sft(config, base, tokenizer, dtype, sft_adapter, reporter)
    negative = StageOutcome()
    if stage != "none":
        negative = run_negatives(config, base, tokenizer, dtype, sft_adapter, final_adapter, reporter)
    merged = None
    if config.export.merged:
        reporter.info("merging the adapter into the base model")
        merged = save_merged(base, final_adapter, output / "merged", dtype, config.export.merged_dtype)
    return TrainResult(
        adapter_path=str(final_adapter.resolve()),
        base_model=config.model.base,
        base_model_path=str(base),
        dataset_version=dataset_version,
        steps=sft.steps + negative.steps,
        sft_steps=sft.steps,
        negative_stage=stage,
        negative_steps=negative.steps,
        initial_loss=sft.losses[0] if sft.losses else None,
        final_loss=sft.losses[-1] if sft.losses else None,
        negative_final_loss=negative.losses[-1] if negative.losses else None,
        tokens=sft.tokens,
        tokens_per_s=round(sft.tokens / sft.seconds, 1) if sft.seconds > 0 else 0.0,
        seconds_per_step=round(sft.seconds / sft.steps, 4) if sft.steps else 0.0,
        train_seconds=round(sft.seconds + negative.seconds, 3),
        peak_rss_mb=peak_rss_mb(),
        peak_gpu_mb=peak_gpu_mb(),
        dtype=str(dtype).replace("torch.", ""),
        device=sft.device,
        system_prompt=config.data.system_prompt,
        sft_adapter_path=str(sft_adapter.resolve()) if stage != "none" else None,
        merged_path=str(merged.resolve()) if merged else None,
        mlflow_run_id=run_id,
    )


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / (1024 * 1024), 1)
