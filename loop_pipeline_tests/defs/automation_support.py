"""Set-up for the automation tests: toy traffic in a LOOP_HOME, the router on 127.0.0.1 and the
contexts Dagster evaluates schedules and sensors with."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Iterator

import dagster as dg

from loop_pipeline.router.auth import key_digest
from loop_pipeline.settings import LoopSettings
from loop_pipeline.sim import NO_MESS, SimulationConfig
from loop_pipeline_tests.helpers import simulate_landing
from loop_pipeline_tests.toy_intents import toy_rows

ADMIN_KEY = "automation-test-key"
ADMIN_DIGEST = key_digest(ADMIN_KEY)


def latest_day() -> str:
    """The daily partitions' latest time window (the eager conditions look at it only)."""
    from loop_pipeline.defs.partitions import daily_partitions

    return daily_partitions.get_last_partition_key()


def simulate_toy_day(root: Path, day: str, traces: int, seed: int = 0) -> None:
    """Tidy toy traffic (NO_MESS, a never-wrong frontier) for one day in LOOP_HOME's landing folder."""
    data = root / f"toy-{seed}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(seed, 3000)), encoding="utf-8")
    simulation = SimulationConfig.from_mapping(
        {**NO_MESS, "dataset": "labeled", "input_path": str(data), "days": 1, "traces_per_day": traces,
         "start_date": day, "frontier_error_rate": 0.0, "human_review_rate": 0.3, "seed": seed}
    )
    simulate_landing(simulation, LoopSettings().landing)


def write_train_config(folder: Path, model: Path, steps: int = 300) -> Path:
    """The tiny model's train config (what lora_adapter trains with when LOOP_TRAIN_CONFIG names it)."""
    from loop_pipeline_tests.tiny_models import write_tiny_train_config

    # seed 42 (the train config's default): the retrain test's tiny model reaches the gate with it
    return write_tiny_train_config(folder / "toy-train.yaml", model, folder / "runs" / "toy", steps, seed=42)


def schedule_context(instance: dg.DagsterInstance, defs: dg.Definitions, when: dt.datetime) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(instance=instance, scheduled_execution_time=when, resources=dict(defs.resources))


def evaluate_schedule(schedule: dg.ScheduleDefinition, context: dg.ScheduleEvaluationContext):
    """One tick of ``schedule``, its context closed afterwards (as :func:`tick` does for sensors)."""
    with context:
        return schedule.evaluate_tick(context)


def sensor_context(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None, **resources: object):
    return dg.build_sensor_context(instance=instance, cursor=cursor, resources={**defs.resources, **resources}, definitions=defs)


def tick(defs: dg.Definitions, name: str, context) -> dg.SensorResult | dg.SkipReason | dg.RunRequest:
    """Evaluate the sensor ``name`` once, as the daemon would: one result (a request, or why not).
    The context is closed afterwards (its resources, and the instance state it set as current)."""
    sensor = defs.get_sensor_def(name)
    with context:
        result = sensor(context)
    if isinstance(result, list):
        assert len(result) == 1, result
        return result[0]
    return result


def skip_message(result) -> str:
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    assert isinstance(result, dg.SensorResult) and result.skip_reason is not None, result
    return result.skip_reason.skip_message


def record_retrain_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, run_config: dict | None = None) -> dg.DagsterRun:
    """A retrain_job run record in ``status`` on the instance (as the queue or a run worker leaves it)."""
    from dagster._core.utils import make_new_run_id

    run = dg.DagsterRun(job_name="retrain_job", run_id=make_new_run_id(), run_config=run_config or {}, status=status)
    return instance.add_run(run)


@contextlib.contextmanager
def ephemeral_instance() -> Iterator[dg.DagsterInstance]:
    """An in-memory instance, disposed afterwards. Not entered as a context manager: a sensor
    evaluation enters it again, and Dagster's nested enter would leave this test's (disposed)
    definitions-state storage current for the next test's repository load."""
    instance = dg.DagsterInstance.ephemeral()
    try:
        yield instance
    finally:
        instance.dispose()
