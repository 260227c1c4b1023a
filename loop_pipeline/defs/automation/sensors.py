"""The loop's sensors: a retrain when enough new curated data arrived, the router told when the
champion moves, every failed run recorded with its reason, and declarative automation on by default."""


import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg

from loop_pipeline.core.automation import AutomationConfig, new_curated_counts, shortfall
from loop_pipeline.core.storage import write_bytes_atomic
from loop_pipeline.defs.automation.jobs import active_retrains
from loop_pipeline.defs.automation.router_admin import RouterAdmin, RouterUnreachable
from loop_pipeline.defs.automation.schedules import retrain_request
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking, StageResultIOManager

SCORED = "scored_traces"
THRESHOLDS = "score_thresholds"
FAILURES_FILE = "run_failures.jsonl"
DATASET_FILES = ("sft", "kto", "dpo", "holdout")
SCORED_COLUMNS = ("trace_id", "timestamp", "task_type", "accepted", "p_good_signals", "vetoed")


def trained_version(results_io: StageResultIOManager) -> tuple[str, set[str]] | None:
    """The dataset version the last lora_adapter trained on, and every trace id it holds."""
    import polars as pl

    from loop_pipeline.core.contracts import TrainedAdapter, read_stage_result, stage_result_path

    if not stage_result_path(results_io.results_dir, "lora_adapter").is_file():
        return None
    trained = read_stage_result(results_io.results_dir, "lora_adapter", TrainedAdapter)
    files = [Path(trained.dataset_path) / f"{name}.parquet" for name in DATASET_FILES]
    ids = {i for f in files if f.is_file() for i in pl.read_parquet(f, columns=["trace_id"]).get_column("trace_id").to_list()}
    return trained.dataset_version, ids


def build_retrain_sensor(config: AutomationConfig, job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="retrain_sensor",
        job=job,
        minimum_interval_seconds=config.retrain_sensor.minimum_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests retrain_job when a task type has min_new_examples new curated examples (what the keep "
        "rules of score_thresholds keep, newer than the dataset version the last lora_adapter trained on); "
        "the skip reason says where each task type stands (configs/automation.yaml retrain_sensor).",
    )
    def retrain_sensor(
        context: dg.SensorEvaluationContext,
        storage: LoopStorage,
        configs: LoopConfigs,
        results_io: dg.ResourceParam[StageResultIOManager],
    ):
        from loop_pipeline.core.scoring import keep_rules

        running = active_retrains(context.instance)
        if running:
            return dg.SkipReason(f"a retrain run is still going ({', '.join(running)})")
        settings = configs.load(AutomationConfig).retrain_sensor
        days = storage.table_partitions(SCORED)
        if not days or not storage.document_path(THRESHOLDS).is_file():
            return dg.SkipReason(f"nothing scored yet: no {SCORED} / {THRESHOLDS} under {storage.warehouse_dir}")
        rules = keep_rules(storage.read_document(THRESHOLDS)["thresholds"])
        scored = storage.read_partitions(SCORED, days).select(SCORED_COLUMNS)
        trained = trained_version(results_io)
        counts = new_curated_counts(scored, rules, trained[1] if trained else None)
        due, line = shortfall(counts, settings)
        since = f"dataset {trained[0]}, the last one trained on" if trained else "nothing trained yet"
        if not due:
            return dg.SkipReason(f"not enough new data: {line} (new curated examples since {since})")
        context.log.info(f"retrain requested: {line} since {since}")
        key = json.dumps({"since": trained[0] if trained else None, "counts": counts}, sort_keys=True)
        return retrain_request(
            days,
            f"retrain_sensor: new curated examples {line} since {since}",
            f"retrain_sensor:{key}",
            {"loop/trigger": "retrain_sensor", "loop/new_examples": json.dumps(counts, sort_keys=True)},
        )

    return retrain_sensor


def build_champion_reload_sensor(config: AutomationConfig) -> dg.SensorDefinition:
    reload = config.champion_reload

    @dg.sensor(
        name="champion_reload_sensor",
        minimum_interval_seconds=reload.minimum_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When alias `champion` of the registered model (configs/evaluation.yaml model_name) moves, POSTs "
        "/admin/reload to the router at LOOP_ROUTER_URL; the cursor is the version the router confirmed serving, so "
        "a router that is down or fails to load it is asked again on the next tick.",
    )
    def champion_reload_sensor(
        context: dg.SensorEvaluationContext, mlflow: MlflowTracking, configs: LoopConfigs, router_admin: RouterAdmin
    ):
        from loop_pipeline.core.evaluation import EvalConfig
        from loop_pipeline.core.serving_registry import champion_version

        if not router_admin.url:
            return dg.SkipReason("no router to tell: LOOP_ROUTER_URL is not set")
        model_name = configs.load(EvalConfig).model_name
        version = champion_version(mlflow.target(), model_name)
        if version is None:
            return dg.SkipReason(f"no champion yet: {model_name} has no alias 'champion'")
        if version == context.cursor:
            return dg.SkipReason(f"champion unchanged: {model_name} v{version}, already served by {router_admin.url}")
        try:
            status = router_admin.reload(reload.timeout_s)
        except RouterUnreachable as exc:
            return dg.SkipReason(f"router did not reload {model_name} v{version} (asked again next tick): {exc}")
        if status.get("version") != version:
            return dg.SkipReason(
                f"router at {router_admin.url} serves v{status.get('version')} (alias at v{status.get('alias_version')}), "
                f"not {model_name} v{version} (asked again next tick): {status.get('last_error') or status.get('state')}"
            )
        message = f"router at {router_admin.url} now serves {model_name} v{version} (was {context.cursor or 'not told yet'})"
        context.log.info(message)
        return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=version)

    return champion_reload_sensor


def failure_record(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        causes = []
        cause = error.cause if error else None
        while cause is not None:
            causes.append(cause.message.strip())  # "<class path>: <message>", as Dagster formats it
            cause = cause.cause
        steps.append({
            "step": event.step_key,
            "error": error.message.strip() if error else None,
            "causes": causes,
        })
    return {
        "failed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "trigger": run.tags.get("loop/trigger") or run.tags.get("dagster/schedule_name") or run.tags.get("dagster/sensor_name"),
        "message": context.failure_event.message,
        "steps": steps,
    }


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line appended; the file is replaced whole, so a reader never sees half a line."""
    existing = path.read_bytes() if path.is_file() else b""
    write_bytes_atomic(path, existing + (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))


@dg.run_failure_sensor(
    name="run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Records why every failed run failed (run, job, partition, step, error and its causes) as a line of "
    f"$LOOP_HOME/warehouse/{FAILURES_FILE}, and logs it.",
)
def run_failure_sensor(context: dg.RunFailureSensorContext, storage: LoopStorage) -> None:
    record = failure_record(context)
    path = Path(storage.warehouse_dir) / FAILURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    append_line(path, record)
    reasons = "; ".join(f"{s['step']}: {s['error']}" for s in record["steps"]) or record["message"]
    context.log.error(f"run {record['run_id']} of {record['job']} failed: {reasons} (recorded in {path})")


# Dagster creates a sensor of this name, stopped, for assets with automation conditions; defined here
# RUNNING instead, so the eager re-scoring of the scoring assets runs on a fresh instance.
default_automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions (the scoring stage's eager conditions: a newly ingested "
    "day, or late feedback about the latest day, re-scores it) and requests the runs they call for.",
)
