"""``retrain_job``: scoring, datasets, training, evaluation and registration on the ingested days.

The stages mix daily-partitioned assets (trace_signals, scored_traces) with unpartitioned ones
(quality_model, score_thresholds, training_datasets, lora_adapter, holdout_eval, registered_model),
and one Dagster run cannot hold both. The job's one op therefore runs the selection the way the CLI
and the demo do, through :func:`loop_pipeline.execution.execute`: generation by generation on this
run's instance, one run per day for the daily assets and one run for each unpartitioned generation,
a failed blocking check stopping what comes after it. This run's log names each asset run as it
starts, and its tags say what came out of it (``loop/champion``, ``loop/blocked_by``).
"""


from typing import Any

import dagster as dg
from pydantic import Field

from loop_pipeline.core.automation import AutomationConfig

RETRAIN_JOB = "retrain_job"
# Everything after ingest: the quality score, the datasets, the adapter, the gate and the registry.
RETRAIN_GROUPS = ("scoring", "datasets", "training", "evaluation")
RETRAIN_SELECTION = dg.AssetSelection.groups(*RETRAIN_GROUPS)
# Errors that a retry cannot fix, as they appear in a failed asset run's error.
DETERMINISTIC = ("ConfigError", "DagsterInvalidConfigError", "ValidationError")
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class RetrainConfig(dg.Config):
    days: list[str] = Field(
        default_factory=list,
        description="UTC days to score (YYYY-MM-DD); empty: every ingested day. The quality model is fitted "
        "on all days, so the schedule and the sensor pass every ingested day.",
    )
    reason: str = Field(default="by hand", description="Why this retrain runs (the schedule or sensor says).")


def active_retrains(instance: dg.DagsterInstance) -> list[str]:
    """Ids of retrain_job runs queued or still going."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=RETRAIN_JOB, statuses=ACTIVE))
    return [run.run_id for run in runs]


def retry_policy(config: AutomationConfig) -> dg.RetryPolicy:
    retries = config.retries
    return dg.RetryPolicy(
        max_retries=retries.max_retries,
        delay=retries.delay_s,
        backoff=dg.Backoff.EXPONENTIAL if retries.backoff else None,
    )


@dg.op(
    description="Materializes scoring, datasets, training, evaluation and registration (with their blocking "
    "checks) on the given days, in graph order; a blocked gate is an outcome, not a failure."
)
def retrain(context: dg.OpExecutionContext, config: RetrainConfig) -> dict[str, Any]:
    from loop_pipeline.definitions import build_defs
    from loop_pipeline.execution import execute

    defs = build_defs()
    storage = defs.resources["storage"]
    days = sorted(config.days) or storage.table_partitions("raw_traces")
    if not days:
        raise dg.Failure(
            description=f"no ingested day under {storage.warehouse_dir}: nothing to score (ingest first)", allow_retries=False
        )
    context.log.info(f"retrain ({config.reason}) on {len(days)} day(s): {days[0]} .. {days[-1]}")

    def started(keys: list[dg.AssetKey], day: str | None) -> None:
        context.log.info(f"materializing {', '.join(k.to_user_string() for k in keys)}{f' [{day}]' if day else ''}")

    try:
        execution = execute(RETRAIN_SELECTION, partitions=days, defs=defs, instance=context.instance, on_start=started)
    except RuntimeError as exc:
        # A configuration error fails the same way every time: no retry. Anything else (the registry,
        # the disk, a killed trainer) is retried by the job's RetryPolicy.
        if any(name in str(exc) for name in DETERMINISTIC):
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raise
    summary: dict[str, Any] = {"days": days, "runs": [step.result.run_id for step in execution.steps], "blocked_by": execution.blocked_by}
    tags = {"loop/days": str(len(days))}
    if execution.blocked_by:
        for name, why in sorted(execution.blocked_by.items()):
            context.log.warning(f"blocked by {name}: {why}")
        tags["loop/blocked_by"] = ",".join(sorted(execution.blocked_by))
    registered = execution.for_asset("registered_model")
    if registered:
        metadata = registered[-1].metadata("registered_model")
        summary["champion"] = metadata.get("champion")
        tags["loop/champion"] = f"{metadata.get('model_name')} v{metadata.get('champion')}"
        context.log.info(f"champion: {tags['loop/champion']} (unchanged: {metadata.get('unchanged')})")
    context.instance.add_run_tags(context.run_id, tags)
    return summary


def build_retrain_job(config: AutomationConfig) -> dg.JobDefinition:
    @dg.job(
        name=RETRAIN_JOB,
        description="The loop's retrain: scoring -> datasets -> lora_adapter -> holdout_eval + gate -> registered_model "
        "on every ingested day, as one run that launches the asset runs in graph order.",
        op_retry_policy=retry_policy(config),
        tags={"loop/stage": "retrain"},
    )
    def retrain_job() -> None:
        retrain()

    return retrain_job
