"""``materialize_report``: ``loop report`` and the end of the demo, through the one orchestration
path (:func:`loop_pipeline.execution.execute`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import dagster as dg

from loop_pipeline.execution import Progress, _quiet, execute
from loop_pipeline.settings import LoopSettings

REPORT = dg.AssetSelection.assets("loop_report")


def compact_round(item: dict[str, Any]) -> dict[str, Any]:
    """The figures of one round for the JSON line (the full report is in the JSON file)."""
    record, live, gold = item["record"], item.get("live"), item.get("gold")
    return {
        "round": record["round"],
        "champion_version": record["champion_version"],
        "dataset_version": record["dataset_version"],
        "promoted": record["promoted"],
        "sft_rows": record["sft_rows"],
        "target_agreement": record["target_agreement"],
        "holdout": {k: record[f"holdout_{k}"] for k in ("coverage", "out_of_scope_escalated", "cost_ratio")},
        "failed_checks": sorted(record["failed_checks"]),
        "live": None if live is None else {
            k: live[k] for k in ("requests", "served_locally", "local_share", "shadow_agreement", "shadowed", "blended_cost_ratio",
                                 "frontier_cost_estimated")
        },
        "simulated_gold": None if gold is None else {
            k: gold[k] for k in ("matched", "coverage", "local_agreement", "out_of_scope_escalated", "routed_accuracy")
        },
    }


def materialize_report(
    progress: Progress | None = None,
    plot: Optional[str] = None,
    log_to_mlflow: bool = True,
    frontier_model: Optional[str] = None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """Materialize ``loop_report`` on the LOOP_HOME instance, print its tables through ``progress``
    and return the summary (rounds, flags, plot, JSON and MLflow run)."""
    from loop_pipeline.definitions import build_defs
    from loop_pipeline.defs.report.assets import report_from_document
    from loop_pipeline.core.report import report_text

    say = progress or _quiet
    defs = build_defs(LoopSettings())
    config: dict[str, Any] = {"log_to_mlflow": log_to_mlflow}
    config |= {k: v for k, v in {"plot": str(Path(plot).resolve()) if plot else None, "frontier_model": frontier_model}.items() if v}
    execution = execute(REPORT, op_config={"loop_report": config}, defs=defs, instance=instance)
    step = execution.last("loop_report")
    metadata = step.metadata("loop_report")
    document = Path(str(metadata["report_json"]))
    report = report_from_document(document)
    for line in report_text(report).splitlines():
        say(line)
    summary = report.model_dump(mode="json")
    return {
        "run_id": step.result.run_id,
        "rounds": [compact_round(item) for item in summary["rounds"]],
        "unattributed": summary["unattributed"],
        "flags": summary["flags"],
        "frontier_model": summary["frontier_model"],
        "plot": str(metadata["plot"]),
        "plot_copy": config.get("plot"),
        "report_json": str(document),
        "mlflow_run_id": metadata.get("mlflow_run_id") or None,
    }
