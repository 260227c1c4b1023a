"""Running the Dagster jobs in-process on the LOOP_HOME instance (used by `loop materialize` / `loop demo`).

The runs go through the same job, resources and checks that the Dagster UI launches.
"""

import json
import os
from typing import Any, Callable

import dagster as dg

from loop_pipeline.instance import ensure_dagster_home


# The full event log stays in the instance (and the UI); the terminal gets warnings only.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _instance() -> dg.DagsterInstance:
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home())
    return dg.DagsterInstance.get()


def materialize_ingest(
    partitions: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[dict[str, Any]]:
    """Run ``ingest_job`` for each day (default: every landing day); raise if a run or check fails."""
    from loop_pipeline.definitions import build_defs

    defs = build_defs()  # read LOOP_HOME now, not when the module was first imported
    say = progress or (lambda _: None)
    storage = defs.resources["storage"]
    days = sorted(partitions) if partitions else sorted(storage.landing_days())
    if not days:
        raise RuntimeError(f"no landing day folders under {storage.landing_url}: run `loop simulate` first")
    job = defs.resolve_job_def("ingest_job")
    instance = instance or _instance()
    results = []
    for day in days:
        run = job.execute_in_process(
            partition_key=day, instance=instance, raise_on_error=True, run_config=_QUIET
        )
        checks = {
            evaluation.check_name: evaluation.passed for evaluation in run.get_asset_check_evaluations()
        }
        summary = json.loads(storage.summary_path(day).read_text(encoding="utf-8"))
        failed = sorted(name for name, passed in checks.items() if not passed)
        say(
            f"{day}: {summary['records_in']:>6} in  {summary['valid']:>6} valid  "
            f"{summary['duplicates']:>4} dup  {summary['quarantined']:>4} quarantined  "
            f"checks {'ok' if not failed else 'FAILED: ' + ', '.join(failed)}"
        )
        if failed:
            raise RuntimeError(f"{day}: blocking checks failed: {failed} (run {run.run_id})")
        results.append({"partition": day, "run_id": run.run_id, "checks": checks, **summary})
    return results


def run_demo(
    days: int = 7, traces_per_day: int = 1000, seed: int = 0, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Simulate a week of CLINC150 traffic into the landing folder and ingest it through Dagster."""
    from loop_pipeline.core.simulate import SimulationConfig, simulate
    from loop_pipeline.settings import paths

    say = progress or (lambda _: None)
    home = paths()
    say(f"LOOP_HOME={home.home}")
    config = SimulationConfig.from_config({"days": days, "traces_per_day": traces_per_day, "seed": seed})
    say(f"[1/2] simulating {days} days x {traces_per_day} CLINC150 calls into {home.landing}")
    simulation = simulate(config, home.landing, progress=say)
    say("[2/2] ingesting every landing day through Dagster (ingest_job, blocking checks)")
    partitions = materialize_ingest(progress=say)
    totals = {
        key: sum(p[key] for p in partitions) for key in ("records_in", "valid", "duplicates", "quarantined")
    }
    say(
        f"ingested {totals['records_in']} records: {totals['valid']} valid, "
        f"{totals['duplicates']} duplicates, {totals['quarantined']} quarantined"
    )
    say(f"open the Dagster UI with `make dagster-ui` (DAGSTER_HOME={home.dagster_home})")
    return {
        "demo": "ingest",
        "loop_home": str(home.home),
        "simulation": simulation.to_dict(),
        "ingest": totals,
        "partitions": [
            {
                **{k: p[k] for k in ("partition", "records_in", "valid", "duplicates", "quarantined")},
                "checks_passed": f"{sum(p['checks'].values())}/{len(p['checks'])}",
            }
            for p in partitions
        ],
    }
