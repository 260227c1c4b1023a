"""The report as an MLflow run (experiment ``loop-report``): one metric series per figure, the
round as its step; the PNG and the JSON as artifacts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

from loop_pipeline.core.report.model import LoopReport, RoundReport
from loop_pipeline.core.tracking import TrackingTarget

EXPERIMENT = "loop-report"


def round_metrics(item: RoundReport) -> dict[str, Optional[float]]:
    r, live, gold = item.record, item.live, item.gold
    metrics: dict[str, Optional[float]] = {
        "holdout_coverage": r.holdout_coverage,
        "holdout_out_of_scope_escalated": r.holdout_out_of_scope_escalated,
        "holdout_blended_cost_ratio": r.holdout_cost_ratio,
        "target_agreement": r.target_agreement,
        "sft_rows": r.sft_rows,
        "promoted": float(r.promoted),
    }
    if live is not None:
        metrics |= {
            "live_requests": live.requests,
            "live_served_locally": live.served_locally,
            "live_local_share": live.local_share,
            "live_shadow_agreement": live.shadow_agreement,
            "live_shadowed": live.shadowed,
            "live_blended_cost_ratio": live.blended_cost_ratio,
        }
    if gold is not None:
        metrics |= {
            "sim_gold_coverage": gold.coverage,
            "sim_gold_local_agreement": gold.local_agreement,
            "sim_gold_out_of_scope_escalated": gold.out_of_scope_escalated,
            "sim_gold_routed_accuracy": gold.routed_accuracy,
        }
    return metrics


def log_report(report: LoopReport, tracking: TrackingTarget, artifacts: Sequence[Path], run_name: str = "loop-report") -> str:
    """One finished run; returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client, EXPERIMENT), run_name=run_name)
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(value), now, item.record.round)
        for item in report.rounds
        for name, value in round_metrics(item).items()
        if value is not None
    ]
    flagged = ",".join(str(flag.round) for flag in report.flags)
    params = [Param("rounds", str(len(report.rounds))), Param("label_drift_tvd", str(report.label_drift_tvd)),
              Param("frontier_model", str(report.frontier_model))]
    client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("flagged_rounds", flagged or "none")])
    for artifact in artifacts:
        client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
