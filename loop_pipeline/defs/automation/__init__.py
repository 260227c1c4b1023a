"""The loop running itself: schedules and sensors over the asset graph (issue 14)."""

import dagster as dg

defs = dg.Definitions()
