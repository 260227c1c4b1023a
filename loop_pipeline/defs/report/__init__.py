"""The loop's economics per retrain round (`loop report`) as Dagster metadata (issue 14)."""

import dagster as dg

from loop_pipeline.defs.report.assets import LOOP_REPORT, loop_report

defs = dg.Definitions(assets=[loop_report])

__all__ = ["LOOP_REPORT", "defs", "loop_report"]
