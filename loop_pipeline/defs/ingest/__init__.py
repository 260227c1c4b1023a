"""Ingest stage: landing files -> raw_traces, feedback_events, quarantined_records."""

import dagster as dg

from loop_pipeline.defs.ingest import checks
from loop_pipeline.defs.ingest.assets import landed_records
from loop_pipeline.defs.ingest.sensors import ingest_job, landing_files_sensor

defs = dg.Definitions(
    assets=[landed_records],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[ingest_job],
    sensors=[landing_files_sensor],
)
