"""The loop running itself: the retrain job, its schedule and sensors over the asset graph (issue 14).

Built from the settings (``configs/automation.yaml`` fixes the schedule's cron and time zone and
the retry policy, which Dagster reads when the definitions load)::

    automation_defs(LoopSettings())
"""

import dagster as dg

from loop_pipeline.core.automation import AutomationConfig
from loop_pipeline.defs.automation.jobs import RETRAIN_JOB, RETRAIN_SELECTION, build_retrain_job
from loop_pipeline.defs.automation.router_admin import RouterAdmin
from loop_pipeline.defs.automation.schedules import build_nightly_retrain
from loop_pipeline.defs.automation.sensors import (
    build_champion_reload_sensor,
    build_retrain_sensor,
    default_automation_condition_sensor,
    run_failure_sensor,
)
from loop_pipeline.settings import LoopSettings


def automation_defs(settings: LoopSettings) -> dg.Definitions:
    config = settings.load(AutomationConfig)
    job = build_retrain_job(config)
    return dg.Definitions(
        jobs=[job],
        schedules=[build_nightly_retrain(config, job)],
        sensors=[
            build_retrain_sensor(config, job),
            build_champion_reload_sensor(config),
            run_failure_sensor,
            default_automation_condition_sensor,
        ],
        resources={"router_admin": RouterAdmin(url=settings.router_url)},
    )


__all__ = ["RETRAIN_JOB", "RETRAIN_SELECTION", "automation_defs"]
