"""``nightly_retrain``: every night (configs/automation.yaml), a retrain when a day landed since the
last one."""


import datetime as dt

import dagster as dg

from loop_pipeline.core.automation import AutomationConfig
from loop_pipeline.defs.automation.jobs import RETRAIN_JOB, active_retrains
from loop_pipeline.defs.ingest.assets import FEEDBACK_EVENTS, RAW_TRACES
from loop_pipeline.resources import LoopStorage

LANDED = (RAW_TRACES, FEEDBACK_EVENTS)


def last_retrain(instance: dg.DagsterInstance) -> tuple[str, float] | None:
    """The latest successful retrain_job run: its id and when it started."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=RETRAIN_JOB, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    if not records:
        return None
    record = records[0]
    return record.dagster_run.run_id, record.start_time or record.create_timestamp.timestamp()


def landed_days(instance: dg.DagsterInstance, since: float | None) -> list[str]:
    """Days whose traces or feedback were ingested (materialized) after ``since`` (None: ever)."""
    days: set[str] = set()
    for key in LANDED:
        cursor = None
        while True:
            found = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_timestamp=since), limit=500, cursor=cursor
            )
            days.update(r.partition_key for r in found.records if r.partition_key)
            if not found.has_more:
                break
            cursor = found.cursor
    return sorted(days)


def retrain_request(days: list[str], reason: str, run_key: str | None, tags: dict[str, str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=RETRAIN_JOB,
        run_config={"ops": {"retrain": {"config": {"days": days, "reason": reason}}}},
        tags={"loop/days": f"{days[0]}..{days[-1]}" if days else "", **tags},
    )


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def build_nightly_retrain(config: AutomationConfig, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    nightly = config.nightly_retrain

    @dg.schedule(
        name="nightly_retrain",
        job=job,
        cron_schedule=nightly.cron,
        execution_timezone=nightly.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At '{nightly.cron}' ({nightly.timezone}): retrain_job on every ingested day when traces or "
        "feedback of a day were ingested since the last successful retrain; skipped, with the reason, when none "
        "were or a retrain run is still going (configs/automation.yaml nightly_retrain).",
    )
    def nightly_retrain(context: dg.ScheduleEvaluationContext, storage: LoopStorage):
        running = active_retrains(context.instance)
        if running:
            return dg.SkipReason(f"a retrain run is still going ({', '.join(running)})")
        last = last_retrain(context.instance)
        landed = landed_days(context.instance, last[1] if last else None)
        if not landed:
            since = f"the last retrain (run {last[0]} at {_when(last[1])})" if last else "the instance began (nothing ingested yet)"
            return dg.SkipReason(f"no day landed since {since}")
        days = storage.table_partitions(RAW_TRACES.path[-1])
        scheduled = context.scheduled_execution_time
        return retrain_request(
            days,
            f"nightly_retrain: {len(landed)} day(s) landed since the last retrain ({', '.join(landed)})",
            f"nightly_retrain:{scheduled.isoformat()}" if scheduled else None,
            {"loop/trigger": "nightly_retrain", "loop/landed_days": ",".join(landed)},
        )

    return nightly_retrain
