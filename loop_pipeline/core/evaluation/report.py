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
    expected: str  # the row's certification reference (see TaskReport.certified_against)
    candidate: str
    count: int


class TaskReport(StageResult):
    """One task type on the holdout: every trace of the frozen holdout groups (docs/metrics.md)."""

    task_type: str
    kind: str
    n: int  # holdout rows (all traffic of the holdout groups)
    n_in_scope: int  # rows whose reference is not an escalation label
    n_with_reference: int  # rows with a curated reference (review, edit, accepted_scored)
    reference_sources: dict[str, int]  # rows per reference_source
    # Rows with a frontier answer (the frontier's own output; a locally served trace's shadow answer;
    # none for a local answer nobody shadowed), and rows with the certification reference (what the
    # threshold, served agreement and confusions read). None: a report from before they were counted.
    n_with_frontier: Optional[int] = None
    n_certification: Optional[int] = None
    agreement_frontier: Optional[float]  # rows with a frontier answer: candidate vs it
    agreement_reference: Optional[float]  # rows with a curated reference: candidate vs it
    certified_against: str  # "reference" or "frontier" (EvalConfig.certify_against)
    threshold: Optional[float]  # certified on the test half; None: no threshold reaches the target
    selection: ThresholdSelection
    calibration_n: int
    test_n: int
    coverage: float  # test half: share of in-scope rows served locally
    served_agreement: Optional[float]  # test half: agreement among served rows, against the certification reference
    out_of_scope_n: int  # test half
    out_of_scope_escalated: Optional[float]  # test half: share of out-of-scope rows escalated
    # Simulated traffic only (the simulator's gold), never on a decision path: accuracy on the test
    # half of the routed system (served rows answered locally, the rest by the frontier) and of
    # sending everything to the frontier. None when the holdout has no simulator gold.
    sim_accuracy_routed: Optional[float] = None
    sim_accuracy_all_frontier: Optional[float] = None
    # Drawn in the plots; not carried in the JSON report.
    curve: list[CurvePoint] = Field(default_factory=list, exclude=True)
    confusions: list[Confusion] = Field(default_factory=list)


class Throughput(StageResult):
    """Requests/s as served, measured on the holdout prompts in arrival order (not sorted by length)."""

    device_kind: str  # cpu, or the GPU's name (lower-case, dashes): what local_price_per_hour is looked up by
    load_seconds: float  # loading the model: reported, not in the rates
    one_at_a_time_requests_per_s: float  # each request alone (batch of 1)
    batched_requests_per_s: float  # micro-batches of batch_size, as the router batches concurrent requests
    batch_size: int
    one_at_a_time_n: int  # requests timed one at a time (a sample of the holdout on a slow device)


class EvalReport(StageResult):
    model: str
    dataset_version: str
    n: int
    target_agreement: float
    certified_against: str
    coverage: float  # all task types, test halves, in-scope rows served
    throughput: Throughput
    cost: CostEstimate  # at the router's batching (batched_requests_per_s)
    cost_one_at_a_time: CostEstimate  # every request alone: the cost with no concurrent traffic
    tasks: dict[str, TaskReport]

    @property
    def requests_per_s(self) -> float:
        """The throughput the cost is computed at (the router's batching)."""
        return self.cost.local_requests_per_s


def log_evaluation(
    tracking: TrackingTarget, report: EvalReport, promote: bool, folder: Path, training_run_id: str | None
) -> str:
    """One MLflow run (experiment ``loop-evaluation``) with the figures and per-example answers.
    ``sim_`` metrics come from the simulator's gold (simulated traffic only) and decide nothing."""
    client = tracking.client()
    experiment = tracking.experiment_id(client, "loop-evaluation")
    throughput = report.throughput
    metrics: dict[str, float | None] = {
        "coverage": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "blended_cost_ratio_one_at_a_time": report.cost_one_at_a_time.blended_cost_ratio,
        "requests_per_s": report.requests_per_s,
        "batched_requests_per_s": throughput.batched_requests_per_s,
        "one_at_a_time_requests_per_s": throughput.one_at_a_time_requests_per_s,
        "load_seconds": throughput.load_seconds,
        "frontier_cost_rows": report.cost.frontier_cost_rows,
        "frontier_cost_skipped_no_frontier_answer": report.cost.frontier_cost_skipped,
    }
    for name, task in report.tasks.items():
        metrics.update(
            {
                f"{name}/agreement_frontier": task.agreement_frontier,
                f"{name}/agreement_reference": task.agreement_reference,
                f"{name}/n_with_reference": task.n_with_reference,
                f"{name}/n_with_frontier": task.n_with_frontier,
                f"{name}/n_certification": task.n_certification,
                f"{name}/coverage": task.coverage,
                f"{name}/threshold": task.threshold,
                f"{name}/served_agreement": task.served_agreement,
                f"{name}/out_of_scope_escalated": task.out_of_scope_escalated,
                f"{name}/sim_accuracy_routed": task.sim_accuracy_routed,
                f"{name}/sim_accuracy_all_frontier": task.sim_accuracy_all_frontier,
            }
        )
    return log_run(
        client,
        experiment,
        f"eval-{report.dataset_version}",
        params={
            "target_agreement": report.target_agreement,
            "certified_against": report.certified_against,
            "n": report.n,
            "candidate": report.model,
            "device_kind": throughput.device_kind,
            "batch_size": throughput.batch_size,
            "local_price_per_hour": report.cost.local_price_per_hour,
        },
        metrics=metrics,
        tags={
            "loop.stage": "evaluation",
            "dataset_version": report.dataset_version,
            "training_run_id": str(training_run_id),
            "promote": str(promote),
        },
        # Dot-named files are temporaries of an atomic write (a killed run's), not the report.
        artifacts=sorted(p for p in folder.iterdir() if not p.name.startswith(".")),
    )
