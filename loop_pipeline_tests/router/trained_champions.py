"""Real champions for the router tests: a tiny Llama trained by the real trainer on the toy
classification (some prompts held out), evaluated on its holdout by the real evaluation code, and
registered by the real ``register_and_promote`` in a real MLflow registry (SQLite)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.datasets import build_datasets
from loop_pipeline.core.evaluation import Candidate, EvalConfig, EvalReport, EvaluationOutcome, TaskReport, blended_cost
from loop_pipeline.core.evaluation.gate import GateDecision, GatePart, GateParts
from loop_pipeline.core.evaluation.promotion import register_and_promote
from loop_pipeline.core.evaluation.report import Throughput
from loop_pipeline.core.evaluation.thresholds import ThresholdSelection
from loop_pipeline.core.storage import write_parquet_atomic
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.core.training import TrainConfig, main
from loop_pipeline_tests.core.training.toy import corpus, examples, train_config
from loop_pipeline_tests.tiny_models import build_tiny_model

TASK_TYPE = "classify"
TASKS = TasksConfig.from_mapping(
    {"tasks": {TASK_TYPE: {"kind": "classification", "labels": ["billing", "travel", "tech"], "escalation_labels": ["out_of_scope"]}}}
)
HELD_OUT = "question about the"  # prompts of this template are the holdout
PRICE_PER_HOUR = 0.36  # the CPU the router tests evaluate and serve on


def eval_config(model_name: str) -> EvalConfig:
    return EvalConfig(model_name=model_name, max_new_tokens=8, dtype="float32", local_price_per_hour={"cpu": PRICE_PER_HOUR}, batch_size=32)


def dataset_version(root: Path) -> Path:
    frame = examples().with_columns(
        pl.when(pl.col("messages").list.last().struct.field("content").str.starts_with(HELD_OUT))
        .then(pl.lit("holdout"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )
    version = root / "datasets" / "v-toy"
    version.mkdir(parents=True)
    for name, table in build_datasets(frame).items():
        write_parquet_atomic(version / f"{name}.parquet", table)
    return version


def train_run(root: Path, model: Path, version: Path, name: str, steps: int) -> TrainedAdapter:
    raw = train_config(model, version, root, root / name, sft={"max_steps": steps}, data={"system_prompt": "drop"},
                       export={"merged": True, "merged_dtype": "float32"})
    result = main(TrainConfig.from_mapping(raw))
    return TrainedAdapter(**result.to_dict(), dataset_path=str(version), train_config=f"test:{name}")


def passed_outcome(trained: TrainedAdapter, threshold: float) -> EvaluationOutcome:
    """An evaluation the gate passed, with ``threshold`` certified for the classify task."""
    selection = ThresholdSelection(threshold=threshold, selected=threshold, calibration_p=0.01, test_p=0.02, n_min=45)
    task = TaskReport(
        task_type=TASK_TYPE, kind="classification", n=200, n_in_scope=200, n_with_reference=160,
        reference_sources={"review": 40, "accepted_scored": 120, "frontier_unverified": 40},
        agreement_frontier=0.95, agreement_reference=0.96, certified_against="reference", threshold=threshold,
        selection=selection, calibration_n=100, test_n=100, coverage=0.9, served_agreement=0.97, out_of_scope_n=0,
        out_of_scope_escalated=None,
    )
    throughput = Throughput(device_kind="cpu", load_seconds=0.5, one_at_a_time_requests_per_s=2.0, batched_requests_per_s=10.0,
                            batch_size=32, one_at_a_time_n=64)
    report = EvalReport(
        model=f"run {trained.mlflow_run_id}", dataset_version=trained.dataset_version, n=200, target_agreement=0.95,
        certified_against="reference", coverage=0.9, throughput=throughput,
        cost=blended_cost(0.9, 0.01, PRICE_PER_HOUR, 10.0),
        cost_one_at_a_time=blended_cost(0.9, 0.01, PRICE_PER_HOUR, 2.0, "measured_one_at_a_time"),
        tasks={TASK_TYPE: task},
    )
    passed = GatePart(passed=True, reasons=["ok"])
    return EvaluationOutcome(
        report=report, decision=GateDecision(promote=True, parts=GateParts(target_at_min_coverage=passed, no_regression=passed, dataset_checks=passed)),
        regression=None, candidate=Candidate.from_adapter(trained), trained=trained, from_lineage=True, report_dir=str(trained.adapter_path),
        plots=[], mlflow_run_id=None,
    )


def register(trained: TrainedAdapter, tracking: TrackingTarget, model_name: str, threshold: float) -> str:
    return register_and_promote(passed_outcome(trained, threshold), tracking, eval_config(model_name), TASKS).champion


def build_workspace(root: Path) -> dict:
    """Two training runs (a well and a barely trained one) in one MLflow store."""
    model = build_tiny_model(root / "tiny-llama", corpus())
    version = dataset_version(root)
    runs = [train_run(root, model, version, "run-a", 60), train_run(root, model, version, "run-b", 15)]
    tracking = TrackingTarget(f"sqlite:///{root / 'mlflow.db'}", (root / "mlflow-artifacts").as_uri())
    return {"root": root, "tracking": tracking, "runs": runs, "version": version, "holdout": pl.read_parquet(version / "holdout.parquet")}
