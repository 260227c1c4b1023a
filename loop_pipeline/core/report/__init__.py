"""``loop report``: the loop's economics per retrain round (no Dagster here: plain data in, a
:class:`LoopReport` out; ``defs/report`` reads the instance and the warehouse)."""

from loop_pipeline.core.report.build import build_report, report_summary, rounds_by_version
from loop_pipeline.core.report.flags import causes, label_counts, regression_flags, total_variation
from loop_pipeline.core.report.live import check_replay, gold_figures, live_figures, router_traffic, with_costs
from loop_pipeline.core.report.model import (
    LABEL_DRIFT_TVD,
    OUT_OF_SCOPE_GOLD,
    REPLAY_COLUMNS,
    REPLAY_TABLE,
    Flag,
    GoldFigures,
    LiveFigures,
    LoopReport,
    RoundRecord,
    RoundReport,
)
from loop_pipeline.core.report.render import report_text, save_plot
from loop_pipeline.core.report.tracking import EXPERIMENT, log_report

__all__ = [
    "EXPERIMENT",
    "LABEL_DRIFT_TVD",
    "OUT_OF_SCOPE_GOLD",
    "REPLAY_COLUMNS",
    "REPLAY_TABLE",
    "Flag",
    "GoldFigures",
    "LiveFigures",
    "LoopReport",
    "RoundRecord",
    "RoundReport",
    "build_report",
    "causes",
    "check_replay",
    "gold_figures",
    "label_counts",
    "live_figures",
    "log_report",
    "regression_flags",
    "report_summary",
    "report_text",
    "rounds_by_version",
    "router_traffic",
    "save_plot",
    "total_variation",
    "with_costs",
]
