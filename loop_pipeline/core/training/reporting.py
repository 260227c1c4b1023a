"""Where progress goes besides the trainer's own progress bar on stderr: the terminal, the
Dagster event log (under Pipes) and an MLflow run."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.result import TrainResult


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
    """One MLflow run per training: params, per-step metrics, final figures, adapter + merged model.
    The config's tracking section must name the store (``TrainConfig.check_runnable``)."""

    def __init__(self, config: TrainConfig, dataset_version: str):
        from mlflow.entities import Param

        from loop_pipeline.core.tracking import TrackingTarget  # imports mlflow's stack: only when tracking

        tracking = config.tracking
        self.target = TrackingTarget(tracking.tracking_uri, tracking.artifact_root)
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
        params = flatten(config.to_dict())
        params.pop("tracking.tracking_uri", None)  # may carry credentials
        names = sorted(params)
        for start in range(0, len(names), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=[Param(k, str(params[k])[:6000]) for k in names[start : start + 100]])

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


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"r": 8}}`` -> ``{"lora.r": 8}`` (MLflow params)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(flatten(item, f"{name}."))
        else:
            out[name] = item
    return out
