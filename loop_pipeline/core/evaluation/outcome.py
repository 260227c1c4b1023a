"""The typed results the evaluation stage hands on: ``holdout_eval`` -> :class:`EvaluationOutcome`,
``registered_model`` -> :class:`RegisteredModel`; and the one JSON line of ``loop eval``."""

from __future__ import annotations

from typing import Any, Optional

from loop_pipeline.core.contracts import StageResult, TrainedAdapter
from loop_pipeline.core.evaluation.candidate import Candidate
from loop_pipeline.core.evaluation.gate import GateDecision, PairedComparison
from loop_pipeline.core.evaluation.report import EvalReport, TaskReport


class EvaluationOutcome(StageResult):
    report: EvalReport
    decision: GateDecision
    regression: Optional[PairedComparison]  # None: no champion to compare with
    candidate: Candidate  # what was evaluated
    trained: TrainedAdapter  # the lineage's adapter; its dataset version's holdout was the test
    # The candidate is `trained` itself (not an explicit model folder or another prompt
    # transform): only such an evaluation may register a version.
    from_lineage: bool
    report_dir: str  # report.json, per_example.parquet, plots
    plots: list[str]
    mlflow_run_id: Optional[str] = None


class RegisteredModel(StageResult):
    model_name: str
    champion: str
    previous: Optional[str]
    reason: str
    unchanged: bool  # the champion already was this training run: nothing registered
    source: str
    tags: dict[str, str]


def _task_summary(t: TaskReport) -> dict[str, Any]:
    return {
        "n": t.n,
        "n_with_reference": t.n_with_reference,
        "n_with_frontier": t.n_with_frontier,
        "n_certification": t.n_certification,
        "reference_sources": t.reference_sources,
        "agreement_frontier": t.agreement_frontier,
        "agreement_reference": t.agreement_reference,
        "threshold": t.threshold,
        "coverage_at_target": t.coverage,
        "served_agreement": t.served_agreement,
        "out_of_scope_escalated": t.out_of_scope_escalated,
        # The simulator's gold (simulated traffic only; None otherwise): reported, never decides.
        "simulated_gold_accuracy": (
            None
            if t.sim_accuracy_routed is None
            else {"routed": t.sim_accuracy_routed, "all_frontier": t.sim_accuracy_all_frontier}
        ),
    }


def eval_summary(outcome: EvaluationOutcome) -> dict[str, Any]:
    """The one JSON line of `loop eval`."""
    report = outcome.report
    throughput = report.throughput
    return {
        "model": report.model,
        "dataset_version": report.dataset_version,
        "target_agreement": report.target_agreement,
        "certified_against": report.certified_against,
        "tasks": {name: _task_summary(t) for name, t in report.tasks.items()},
        "coverage": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "blended_cost_ratio_one_at_a_time": report.cost_one_at_a_time.blended_cost_ratio,
        "frontier_cost": {
            "per_request": report.cost.frontier_cost_per_request,
            "rows": report.cost.frontier_cost_rows,
            "skipped_no_frontier_answer": report.cost.frontier_cost_skipped,
        },
        "requests_per_s": report.requests_per_s,
        "throughput": {
            "device_kind": throughput.device_kind,
            "batched_requests_per_s": throughput.batched_requests_per_s,
            "batch_size": throughput.batch_size,
            "one_at_a_time_requests_per_s": throughput.one_at_a_time_requests_per_s,
            "load_seconds": throughput.load_seconds,
            "local_price_per_hour": report.cost.local_price_per_hour,
        },
        "decision": {
            "promote": outcome.decision.promote,
            "reasons": {name: part["reasons"] for name, part in outcome.decision.parts.model_dump().items()},
        },
        "mlflow_run_id": outcome.mlflow_run_id,
    }
