"""``loop_report``: the loop's economics per retrain round from the instance's history (one source
of truth: the holdout_eval, training_datasets and registered_model materializations and their
checks) and the warehouse (the router's traces in raw_traces, the demo's replay table)."""


import json
import shutil
from pathlib import Path
from typing import Optional

import dagster as dg
import polars as pl
from pydantic import Field

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.report import (
    LABEL_DRIFT_TVD,
    REPLAY_TABLE,
    LoopReport,
    build_report,
    check_replay,
    log_report,
    report_summary,
    report_text,
    save_plot,
)
from loop_pipeline.core.report.render import flags_text, gold_table, live_table, rounds_table
from loop_pipeline.core.storage import write_json_atomic
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.defs.evaluation.assets import HOLDOUT_EVAL, REGISTERED_MODEL
from loop_pipeline.defs.ingest.assets import RAW_TRACES
from loop_pipeline.defs.report.history import round_records
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking

LOOP_REPORT = dg.AssetKey("loop_report")
REPORT_FOLDER = "report"  # $LOOP_HOME/warehouse/report/: loop_report.png, loop_report.json


class LoopReportConfig(dg.Config):
    plot: Optional[str] = Field(default=None, description="Also write the PNG here (loop report --plot PATH).")
    label_drift_tvd: float = Field(
        default=LABEL_DRIFT_TVD, ge=0, le=1, description="Total-variation distance above which a round's label mix has drifted."
    )
    frontier_model: Optional[str] = Field(
        default=None, description="Prices local requests' all-frontier cost when no trace names the frontier model."
    )
    log_to_mlflow: bool = Field(default=True, description="Log the report as a run of experiment loop-report.")


def read_traces(storage: LoopStorage) -> pl.DataFrame | None:
    return storage.read_partitions(RAW_TRACES.path[-1]) if storage.table_partitions(RAW_TRACES.path[-1]) else None


def read_replay(storage: LoopStorage) -> pl.DataFrame | None:
    """The replay table's days (simulated traffic only), checked for its columns; None without one."""
    days = storage.table_partitions(REPLAY_TABLE)
    if not days:
        return None
    return check_replay(storage.read_partitions(REPLAY_TABLE, days), str(Path(storage.warehouse_dir) / REPLAY_TABLE))


def write_outputs(report: LoopReport, storage: LoopStorage, plot: Optional[str]) -> tuple[Path, Path]:
    folder = Path(storage.warehouse_dir) / REPORT_FOLDER
    png = save_plot(report, folder / "loop_report.png")
    if plot:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, plot)
    document = folder / "loop_report.json"
    write_json_atomic(document, report_summary(report))
    return png, document


@dg.asset(
    key=LOOP_REPORT,
    group_name="report",
    deps=[HOLDOUT_EVAL, REGISTERED_MODEL, RAW_TRACES],
    kinds={"mlflow", "polars"},
    description="The loop's economics per retrain round (one holdout_eval materialization each): champion and dataset "
    "version, SFT rows, coverage at the target agreement, out-of-scope escalation and cost ratio on the holdout; live "
    "requests served, local share, shadow agreement and blended cost ratio from the router's traces of each champion; "
    "simulated-gold figures of replayed traffic; a flag, with its causes, on a round that serves less at the same "
    "target agreement. A PNG and JSON under warehouse/report/, an MLflow run (experiment loop-report).",
)
def loop_report(
    context: dg.AssetExecutionContext,
    config: LoopReportConfig,
    storage: LoopStorage,
    configs: LoopConfigs,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    tasks, prices = configs.load(TasksConfig), configs.load(PriceTable)
    kinds = {name: task.kind for name, task in tasks.tasks.items()}
    classification = sorted(name for name, kind in kinds.items() if kind == "classification")
    records = round_records(context.instance, classification)
    report = build_report(records, read_traces(storage), read_replay(storage), prices, kinds, config.frontier_model, config.label_drift_tvd)
    png, document = write_outputs(report, storage, config.plot)
    run_id = log_report(report, mlflow.target(), [png, document]) if config.log_to_mlflow else None
    for line in report_text(report).splitlines():
        context.log.info(line)
    return dg.MaterializeResult(
        metadata={
            "rounds": len(report.rounds),
            "flagged_rounds": dg.MetadataValue.json([flag.round for flag in report.flags]),
            "rounds_table": dg.MetadataValue.md(rounds_table(report)),
            "live_table": dg.MetadataValue.md(live_table(report)),
            "simulated_gold_table": dg.MetadataValue.md(gold_table(report)),
            "flags": dg.MetadataValue.md(flags_text(report)),
            "plot": dg.MetadataValue.path(str(png)),
            "report_json": dg.MetadataValue.path(str(document)),
            "frontier_model": report.frontier_model or "",
            "mlflow_run_id": run_id or "",
            **configs.metadata(tasks, prices),
        }
    )


def report_from_document(path: Path) -> LoopReport:
    return LoopReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
