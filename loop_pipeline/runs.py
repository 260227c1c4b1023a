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


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's error, with its causes (a ConfigError names the field there)."""
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    return failure.step_failure_data.error.to_string() if failure else "see the run's event log"


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
        raise RuntimeError(f"training_datasets failed (run {result.run_id}): {_failure(result)}")
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


def materialize_training(
    train_config: str | None = None,
    max_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """lora_adapter on the latest dataset version: the trainer runs in its own process (Dagster
    Pipes) and prints its progress bar to this terminal; returns the materialization metadata."""
    from loop_pipeline.definitions import build_defs

    say = progress or (lambda _: None)
    defs = build_defs()
    instance = instance or _instance()
    config = {k: v for k, v in {"train_config": train_config, "max_steps": max_steps}.items() if v is not None}
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets("lora_adapter"),
        instance=instance,
        resources=defs.resources,
        run_config={**_QUIET, "ops": {"lora_adapter": {"config": config}}},
        raise_on_error=False,
    )
    materialized = result.asset_materializations_for_node("lora_adapter")
    if not materialized:
        raise RuntimeError(f"lora_adapter failed (run {result.run_id}): {_failure(result)}")
    metadata = {key: value.value for key, value in materialized[0].metadata.items()}
    say(
        f"lora_adapter: {metadata['sft_steps']} steps, loss {metadata.get('initial_loss', float('nan')):.3f} -> "
        f"{metadata.get('final_loss', float('nan')):.3f}, {metadata['tokens_per_s']:.0f} tokens/s, "
        f"{metadata['seconds_per_step']:.2f} s/step, peak RSS {metadata['peak_rss_mb']:.0f} MB "
        f"(MLflow run {metadata.get('mlflow_run_id')})"
    )
    return {"run_id": result.run_id, **metadata}


DEMO_DOMAINS = ("banking", "credit_cards", "travel")


def run_demo(
    days: int = 7,
    traces_per_day: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    domains: tuple[str, ...] | None = DEMO_DOMAINS,
    train: bool = True,
    train_max_steps: int | None = None,
) -> dict[str, Any]:
    """Simulate a week of CLINC150 traffic (3 domains by default) into the landing folder, ingest,
    score and version it through Dagster, then fine-tune SmolLM2-135M on it (``train``)."""
    from loop_pipeline.core.scoring import describe_threshold
    from loop_pipeline.core.simulate import SimulationConfig, simulate
    from loop_pipeline.settings import paths

    say = progress or (lambda _: None)
    home = paths()
    say(f"LOOP_HOME={home.home}")
    steps = 6 if train else 4
    overrides: dict[str, Any] = {"days": days, "traces_per_day": traces_per_day, "seed": seed}
    if domains:
        overrides["domains"] = list(domains)
    config = SimulationConfig.from_config(overrides)
    scope = f"{', '.join(domains)} + out-of-scope" if domains else "all domains"
    say(f"[1/{steps}] simulating {days} days x {traces_per_day} CLINC150 calls ({scope}) into {home.landing}")
    simulation = simulate(config, home.landing, progress=say)
    say(f"[2/{steps}] ingesting every landing day through Dagster (ingest_job, blocking checks)")
    partitions = materialize_ingest(progress=say)
    totals = {
        key: sum(p[key] for p in partitions) for key in ("records_in", "valid", "duplicates", "quarantined")
    }
    say(
        f"ingested {totals['records_in']} records: {totals['valid']} valid, "
        f"{totals['duplicates']} duplicates, {totals['quarantined']} quarantined"
    )
    say(f"[3/{steps}] scoring: signals, calibrated p_good, thresholds per task type (MLflow runs)")
    scored = materialize_scoring(partitions=None, progress=say)
    for task_type, entry in scored["thresholds"].items():
        say("  " + describe_threshold(task_type, entry))
    for name, row in sorted((scored["comparison"] or {}).items(), key=lambda item: -item[1]["kept"]):
        rate = "n/a (keeps nothing)" if row["true_error_rate"] is None else f"{row['true_error_rate']:.4f}"
        say(f"  filter {name:<10} kept {row['kept']:>6}  true error rate {rate}")
    say(f"[4/{steps}] datasets: redact, deduplicate, split (frozen holdout), version, expectations")
    built = materialize_datasets(progress=say)
    for name, rows in built["rows"].items():
        say(f"  {name:<8} {rows:>6} rows")
    trained = None
    evaluation = None
    if train:
        if built["blocked_by"]:
            raise RuntimeError(f"dataset version {built['version']} is blocked by {sorted(built['blocked_by'])}: not training on it")
        say(f"[5/{steps}] training: LoRA on SmolLM2-135M-Instruct (lora_adapter, trainer in a Dagster Pipes subprocess)")
        trained = materialize_training(max_steps=train_max_steps, progress=say)
        say(f"[6/{steps}] evaluation: the candidate on the frozen holdout, the promotion gate, the MLflow registry")
        evaluation = materialize_evaluation(progress=say)
    say(f"open the Dagster UI with `make dagster-ui` (DAGSTER_HOME={home.dagster_home}), MLflow with `make mlflow-ui`")
    return {
        "demo": "ingest+scoring+datasets" + ("+training+evaluation" if train else ""),
        "training": trained,
        "evaluation": eval_summary(evaluation["outcome"]) | {"registered": evaluation["registered"]} if evaluation else None,
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


def materialize_evaluation(
    max_examples: int | None = None,
    progress: Callable[[str], None] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """holdout_eval, its blocking gate checks and registered_model in one run. A refused candidate
    does not raise: the result says which check failed and why."""
    from loop_pipeline.definitions import build_defs

    say = progress or (lambda _: None)
    defs = build_defs()
    instance = instance or _instance()
    config = {"max_examples": max_examples} if max_examples else {}
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets("holdout_eval", "registered_model"),
        instance=instance,
        resources=defs.resources,
        # INFO: the evaluation's own progress lines (generation, figures) reach the terminal.
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}, "ops": {"holdout_eval": {"config": config}}},
        raise_on_error=False,
    )
    if not result.asset_materializations_for_node("holdout_eval"):
        raise RuntimeError(f"holdout_eval failed (run {result.run_id}): {_failure(result)}")
    storage = defs.resources["storage"]
    outcome = storage.read_document("holdout_eval")
    checks = {e.check_name: {"passed": e.passed, "why": e.description} for e in result.get_asset_check_evaluations()}
    registered = storage.read_document("registered_model") if result.asset_materializations_for_node("registered_model") else None
    for name, check in sorted(checks.items()):
        say(f"  {'ok  ' if check['passed'] else 'FAIL'} {name}: {check['why']}")
    if registered and registered["unchanged"]:
        say(f"unchanged: {registered['model_name']} v{registered['champion']} (this training run) is already the champion")
    elif registered:
        say(f"promoted: {registered['model_name']} v{registered['champion']} is the champion (previous: {registered['previous']})")
    else:
        say("not promoted: the gate refused the candidate (see the failing checks above)")
    return {"run_id": result.run_id, "outcome": outcome, "checks": checks, "registered": registered}


def evaluate_candidate_now(
    model: str | None = None,
    adapter: str | None = None,
    system_prompt: str | None = None,
    max_examples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`loop eval`: the latest training run's model (or ``model`` [+ ``adapter``]) on the holdout of
    its dataset version (or the latest), with the same gate as the Dagster checks; registers nothing."""
    from loop_pipeline.core.evaluation import Candidate, EvalConfig, run_evaluation
    from loop_pipeline.definitions import build_defs
    from loop_pipeline.defs.evaluation.assets import champion_candidate, dataset_check_results, frontier_cost_per_request

    defs = build_defs()
    storage = defs.resources["storage"]
    if model:
        trained = {"dataset_version": storage.latest_dataset_version(), "mlflow_run_id": None, "base_model": model, "adapter_path": adapter}
        candidate = Candidate(model, adapter, system_prompt or "keep", model)
    else:
        trained = storage.read_document("lora_adapter")
        candidate = Candidate.from_training(trained)
        if system_prompt:
            candidate = Candidate(candidate.model_path, candidate.adapter_path, system_prompt, candidate.label)
    instance = _instance()
    config = EvalConfig.load({"max_examples": max_examples} if max_examples else None)
    outcome = run_evaluation(
        trained,
        storage.datasets_root,
        config,
        tracking=defs.resources["mlflow"].target(),
        frontier_cost=lambda ids: frontier_cost_per_request(storage, ids),
        dataset_checks=lambda version: dataset_check_results(instance, version),
        champion=champion_candidate,
        progress=progress,
        candidate=candidate,
    )
    return outcome


def eval_summary(outcome: dict[str, Any]) -> dict[str, Any]:
    """The one JSON line of `loop eval`."""
    report = outcome["report"]
    return {
        "model": report["model"],
        "dataset_version": report["dataset_version"],
        "target_agreement": report["target_agreement"],
        "tasks": {
            name: {
                "agreement": t["agreement"],
                "accuracy_vs_gold": t["accuracy_vs_gold"],
                "accuracy_vs_sim_gold": t["accuracy_vs_sim_gold"],
                "threshold": t["threshold"],
                "coverage_at_target": t["coverage"],
                "served_agreement": t["served_agreement"],
                "out_of_scope_escalated": t["out_of_scope_escalated"],
            }
            for name, t in report["tasks"].items()
        },
        "coverage": report["coverage"],
        "blended_cost_ratio": report["cost"]["blended_cost_ratio"],
        "requests_per_s": report["requests_per_s"],
        "decision": {
            "promote": outcome["decision"]["promote"],
            "reasons": {name: part["reasons"] for name, part in outcome["decision"]["parts"].items()},
        },
        "mlflow_run_id": outcome.get("mlflow_run_id"),
    }
