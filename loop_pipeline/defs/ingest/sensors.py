"""Notice new or changed landing files and ingest the day they landed in."""


import datetime as dt
import hashlib
import json

import dagster as dg

from loop_pipeline.defs.ingest.assets import FEEDBACK_EVENTS, QUARANTINED_RECORDS, RAW_TRACES
from loop_pipeline.defs.partitions import daily_partitions
from loop_pipeline.resources import LoopStorage

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(RAW_TRACES, FEEDBACK_EVENTS, QUARANTINED_RECORDS),
    partitions_def=daily_partitions,
    description="Ingest one day of landing files into raw_traces, feedback_events and quarantined_records.",
)


def fingerprint(files: list[dict]) -> str:
    text = json.dumps(sorted(files, key=lambda f: f["file"]), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests an ingest run for each landing day whose files were added or changed.",
)
def landing_files_sensor(context: dg.SensorEvaluationContext, storage: LoopStorage) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {day: fingerprint(files) for day, files in storage.landing_days().items()}
    last_day = daily_partitions.get_last_partition_key()
    requests = []
    skipped = []
    for day, digest in sorted(current.items()):
        if seen.get(day) == digest:
            continue
        if dt.date.fromisoformat(day) < dt.date(2024, 1, 1) or (last_day is not None and day > last_day):
            skipped.append(day)
            continue
        requests.append(dg.RunRequest(run_key=f"{day}:{digest}", partition_key=day))
    if skipped:
        context.log.warning(f"landing days outside the partition range were not ingested: {skipped}")
    # Days still outside the range stay out of the cursor, so they are requested once they open.
    cursor = {day: digest for day, digest in current.items() if day not in skipped}
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
