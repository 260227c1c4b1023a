"""The typed results the evaluation stage hands on: ``holdout_eval`` -> :class:`EvaluationOutcome`,
``registered_model`` -> :class:`RegisteredModel`; and the one JSON line of ``loop eval``."""

from __future__ import annotations

from typing import Any, Optional

from loop_pipeline.core.contracts import StageResult, TrainedAdapter
from loop_pipeline.core.evaluation.candidate import Candidate
from loop_pipeline.core.evaluation.gate import GateDecision, PairedComparison
from loop_pipeline.core.evaluation.report import EvalReport


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


def eval_summary(outcome: EvaluationOutcome) -> dict[str, Any]:
    """The one JSON line of `loop eval`."""
    report = outcome.report
    return {
        "model": report.model,
        "dataset_version": report.dataset_version,
        "target_agreement": report.target_agreement,
        "tasks": {
            name: {
                "agreement": t.agreement,
                "accuracy_vs_gold": t.accuracy_vs_gold,
                "accuracy_vs_sim_gold": t.accuracy_vs_sim_gold,
                "threshold": t.threshold,
                "coverage_at_target": t.coverage,
                "served_agreement": t.served_agreement,
                "out_of_scope_escalated": t.out_of_scope_escalated,
            }
            for name, t in report.tasks.items()
        },
        "coverage": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "requests_per_s": report.requests_per_s,
        "decision": {
            "promote": outcome.decision.promote,
            "reasons": {name: part["reasons"] for name, part in outcome.decision.parts.model_dump().items()},
        },
        "mlflow_run_id": outcome.mlflow_run_id,
    }
