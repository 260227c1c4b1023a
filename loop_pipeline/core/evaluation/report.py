"""What an evaluation found, per task type and overall (typed, JSON-ready), and its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field

from loop_pipeline.core.contracts import StageResult
from loop_pipeline.core.tracking import TrackingTarget, log_run
from loop_pipeline.core.evaluation.cost import CostEstimate
from loop_pipeline.core.evaluation.thresholds import CurvePoint, ThresholdSelection


class Confusion(StageResult):
    frontier: str
    candidate: str
    count: int


class TaskReport(StageResult):
    task_type: str
    kind: str
    n: int
    n_in_scope: int
    agreement: float  # all requests, answered locally, vs the frontier
    accuracy_vs_gold: Optional[float]  # where a human label exists
    accuracy_vs_sim_gold: Optional[float]  # the simulator's truth (measurement only)
    threshold: Optional[float]  # certified on the test half; None: no threshold reaches the target
    selection: ThresholdSelection
    calibration_n: int
    test_n: int
    coverage: float  # test half: share of in-scope requests served locally
    served_agreement: Optional[float]  # test half: agreement among served requests
    out_of_scope_n: int
    out_of_scope_escalated: Optional[float]  # test half: share of out-of-scope requests escalated
    # Drawn in the plots; not carried in the JSON report.
    curve: list[CurvePoint] = Field(default_factory=list, exclude=True)
    confusions: list[Confusion] = Field(default_factory=list)


class EvalReport(StageResult):
    model: str
    dataset_version: str
    n: int
    target_agreement: float
    requests_per_s: float
    coverage: float  # all task types, test halves, in-scope
    cost: CostEstimate
    tasks: dict[str, TaskReport]


def log_evaluation(
    tracking: TrackingTarget, report: EvalReport, promote: bool, folder: Path, training_run_id: str | None
) -> str:
    """One MLflow run (experiment ``loop-evaluation``) with the figures and per-example answers."""
    client = tracking.client()
    experiment = tracking.experiment_id(client, "loop-evaluation")
    metrics: dict[str, float | None] = {
        "coverage": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "requests_per_s": report.requests_per_s,
    }
    for name, task in report.tasks.items():
        metrics.update(
            {
                f"{name}/agreement": task.agreement,
                f"{name}/coverage": task.coverage,
                f"{name}/threshold": task.threshold,
                f"{name}/served_agreement": task.served_agreement,
                f"{name}/out_of_scope_escalated": task.out_of_scope_escalated,
                f"{name}/accuracy_vs_gold": task.accuracy_vs_gold,
                f"{name}/accuracy_vs_sim_gold": task.accuracy_vs_sim_gold,
            }
        )
    return log_run(
        client,
        experiment,
        f"eval-{report.dataset_version}",
        params={"target_agreement": report.target_agreement, "n": report.n, "candidate": report.model},
        metrics=metrics,
        tags={
            "loop.stage": "evaluation",
            "dataset_version": report.dataset_version,
            "training_run_id": str(training_run_id),
            "promote": str(promote),
        },
        artifacts=sorted(folder.iterdir()),
    )
