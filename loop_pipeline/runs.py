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


def materialize_scoring(
    partitions: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """trace_signals and scored_traces for each day (default: every ingested day), with
    quality_model and score_thresholds in between and after; returns score_thresholds' document."""
    from loop_pipeline.definitions import build_defs

    say = progress or (lambda _: None)
    defs = build_defs()
    storage = defs.resources["storage"]
    days = sorted(partitions) if partitions else storage.table_partitions("raw_traces")
    if not days:
        raise RuntimeError("no ingested days: run `loop materialize` (or `loop demo`) first")
    instance = instance or _instance()
    everything = [*defs.assets, *defs.asset_checks]

    def run(key: str, day: str | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            everything,
            selection=dg.AssetSelection.assets(key),
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            run_config=_QUIET,
        )

    for day in days:
        run("trace_signals", day)
    say(f"trace_signals: {len(days)} day(s)")
    model = run("quality_model").asset_materializations_for_node("quality_model")[0].metadata
    say(f"quality_model: {model['note'].value}")
    for day in days:
        run("scored_traces", day)
    say(f"scored_traces: {len(days)} day(s)")
    run("score_thresholds")
    return storage.read_document("score_thresholds")


def materialize_datasets(
    progress: Callable[[str], None] | None = None, instance: dg.DagsterInstance | None = None
) -> dict[str, Any]:
    """training_datasets with its blocking expectations. A failing expectation does not raise: it
    blocks what would train on the version, and the result names it (``blocked_by``)."""
    from loop_pipeline.definitions import build_defs

    say = progress or (lambda _: None)
    defs = build_defs()
    instance = instance or _instance()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets("training_datasets"),
        instance=instance,
        resources=defs.resources,
        run_config=_QUIET,
        raise_on_error=False,
    )
    materialized = result.asset_materializations_for_node("training_datasets")
    if not materialized:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = failure.step_failure_data.error.message if failure else "see the run's event log"
        raise RuntimeError(f"training_datasets failed (run {result.run_id}): {message}")
    metadata = materialized[0].metadata
    evaluations = result.get_asset_check_evaluations()
    blocked = {e.check_name: e.description for e in evaluations if not e.passed}
    say(
        f"training_datasets {metadata['version'].value}: "
        + ("expectations ok" if not blocked else f"BLOCKED by {', '.join(sorted(blocked))}")
    )
    for name, why in sorted(blocked.items()):
        say(f"  {name}: {why}")
    return {
        "version": metadata["version"].value,
        "new_version": metadata["new_version"].value,
        "rows": metadata["rows"].value,
        "rows_by_task_type": metadata["rows_by_task_type"].value,
        "redacted": metadata["redacted"].value,
        "checks": {e.check_name: e.passed for e in evaluations},
        "blocked_by": blocked,
    }


def run_demo(
    days: int = 7, traces_per_day: int = 1000, seed: int = 0, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Simulate a week of CLINC150 traffic into the landing folder and ingest it through Dagster."""
    from loop_pipeline.core.scoring import describe_threshold
    from loop_pipeline.core.simulate import SimulationConfig, simulate
    from loop_pipeline.settings import paths

    say = progress or (lambda _: None)
    home = paths()
    say(f"LOOP_HOME={home.home}")
    config = SimulationConfig.from_config({"days": days, "traces_per_day": traces_per_day, "seed": seed})
    say(f"[1/4] simulating {days} days x {traces_per_day} CLINC150 calls into {home.landing}")
    simulation = simulate(config, home.landing, progress=say)
    say("[2/4] ingesting every landing day through Dagster (ingest_job, blocking checks)")
    partitions = materialize_ingest(progress=say)
    totals = {
        key: sum(p[key] for p in partitions) for key in ("records_in", "valid", "duplicates", "quarantined")
    }
    say(
        f"ingested {totals['records_in']} records: {totals['valid']} valid, "
        f"{totals['duplicates']} duplicates, {totals['quarantined']} quarantined"
    )
    say("[3/4] scoring: signals, calibrated p_good, thresholds per task type (MLflow runs)")
    scored = materialize_scoring(partitions=None, progress=say)
    for task_type, entry in scored["thresholds"].items():
        say("  " + describe_threshold(task_type, entry))
    for name, row in sorted((scored["comparison"] or {}).items(), key=lambda item: -item[1]["kept"]):
        rate = "n/a (keeps nothing)" if row["true_error_rate"] is None else f"{row['true_error_rate']:.4f}"
        say(f"  filter {name:<10} kept {row['kept']:>6}  true error rate {rate}")
    say("[4/4] datasets: redact, deduplicate, split (frozen holdout), version, expectations")
    built = materialize_datasets(progress=say)
    for name, rows in built["rows"].items():
        say(f"  {name:<8} {rows:>6} rows")
    say(f"open the Dagster UI with `make dagster-ui` (DAGSTER_HOME={home.dagster_home}), MLflow with `make mlflow-ui`")
    return {
        "demo": "ingest+scoring+datasets",
        "loop_home": str(home.home),
        "simulation": simulation.to_dict(),
        "ingest": totals,
        "thresholds": scored["thresholds"],
        "comparison": scored["comparison"],
        "calibration": {k: scored["calibration"].get(k) for k in ("method", "n_reviewed", "brier_held_out", "ece_held_out")},
        "mlflow": scored["mlflow"],
        "datasets": {k: built[k] for k in ("version", "new_version", "rows", "rows_by_task_type", "blocked_by")},
        "partitions": [
            {
                **{k: p[k] for k in ("partition", "records_in", "valid", "duplicates", "quarantined")},
                "checks_passed": f"{sum(p['checks'].values())}/{len(p['checks'])}",
            }
            for p in partitions
        ],
    }
