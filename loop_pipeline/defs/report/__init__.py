"""The loop's economics per retrain round (`loop report`) as Dagster metadata (issue 14)."""

import dagster as dg

defs = dg.Definitions()
