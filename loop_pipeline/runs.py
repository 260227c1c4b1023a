"""The stage commands of the CLI (and the demo) as asset selections on the LOOP_HOME instance.

Each function materializes a selection of assets with their checks through
:func:`~loop_pipeline.execution.execute` (which orders it by the asset graph), prints what a person
wants to see through :class:`StageReporter`, and returns the stage's summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from loop_pipeline.execution import Execution, Progress, StepRun, _quiet, execute, open_instance
from loop_pipeline.settings import LoopSettings

INGEST = dg.AssetSelection.groups("ingest")
SCORING = dg.AssetSelection.groups("scoring")
DATASETS = dg.AssetSelection.assets("training_datasets")
TRAINING = dg.AssetSelection.assets("lora_adapter")
EVALUATION = dg.AssetSelection.assets("holdout_eval")
REGISTRATION = dg.AssetSelection.assets("registered_model")


def build_stage_defs(settings: LoopSettings | None = None, **overrides: str | None) -> dg.Definitions:
    from loop_pipeline.definitions import build_defs

    # Built per call: LOOP_* may have changed since the module was imported (tests, the demo).
    return build_defs(settings or LoopSettings(), **overrides)


def ingested_days(defs: dg.Definitions) -> list[str]:
    days = defs.resources["storage"].table_partitions("raw_traces")
    if not days:
        raise RuntimeError("no ingested days: run `loop materialize` (or `loop demo`) first")
    return days


def landing_days(defs: dg.Definitions) -> list[str]:
    storage = defs.resources["storage"]
    days = sorted(storage.landing_days())
    if not days:
        raise RuntimeError(f"no landing day folders under {storage.landing_url}: run `loop simulate` first")
    return days


def read_result(defs: dg.Definitions, asset: str, kind: type):
    """An asset's typed value as the results IO manager stored it."""
    from loop_pipeline.core.contracts import read_stage_result

    return read_stage_result(defs.resources["results_io"].results_dir, asset, kind)


class StageReporter:
    """Prints one or a few lines per finished run, by asset, and keeps what the summaries need."""

    def __init__(self, defs: dg.Definitions, progress: Progress | None = None, days: int = 0):
        self.defs = defs
        self.say = progress or _quiet
        self.days = days
        self.partitions: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}

    def __call__(self, step: StepRun) -> None:
        for key in step.keys:
            name = key.path[-1]
            self.seen[name] = self.seen.get(name, 0) + 1
            handler = getattr(self, f"_{name}", None)
            if handler:
                handler(step)

    def _raw_traces(self, step: StepRun) -> None:
        storage = self.defs.resources["storage"]
        summary = json.loads(storage.summary_path(step.partition).read_text(encoding="utf-8"))
        checks = {name: check["passed"] for name, check in step.checks().items()}
        failed = sorted(name for name, passed in checks.items() if not passed)
        self.say(
            f"{step.partition}: {summary['records_in']:>6} in  {summary['valid']:>6} valid  "
            f"{summary['duplicates']:>4} dup  {summary['quarantined']:>4} quarantined  "
            f"checks {'ok' if not failed else 'FAILED: ' + ', '.join(failed)}"
        )
        self.partitions.append({"partition": step.partition, "run_id": step.result.run_id, "checks": checks, **summary})

    def _trace_signals(self, step: StepRun) -> None:
        if self.seen["trace_signals"] == self.days:
            self.say(f"trace_signals: {self.days} day(s)")

    def _quality_model(self, step: StepRun) -> None:
        note = step.metadata("quality_model").get("note")
        self.say(f"quality_model: {note}" if note else "quality_model: fitted")

    def _scored_traces(self, step: StepRun) -> None:
        if self.seen["scored_traces"] == self.days:
            self.say(f"scored_traces: {self.days} day(s)")

    def _score_thresholds(self, step: StepRun) -> None:
        logged = self.defs.resources["storage"].read_document("score_thresholds").get("mlflow")
        if logged:
            self.say(
                f"score_thresholds: logged {logged['candidate_runs']} candidate runs under parent run "
                f"{logged['parent_run_id']} (MLflow experiment {logged['experiment_id']}, {logged['tracking_uri']})"
            )

    def _training_datasets(self, step: StepRun) -> None:
        metadata = step.metadata("training_datasets")
        blocked = {e.check_name: e.description for e in step.result.get_asset_check_evaluations() if not e.passed}
        self.say(
            f"training_datasets {metadata['version']}: "
            + ("expectations ok" if not blocked else f"BLOCKED by {', '.join(sorted(blocked))}")
        )
        for name, why in sorted(blocked.items()):
            self.say(f"  {name}: {why}")

    def _lora_adapter(self, step: StepRun) -> None:
        metadata = step.metadata("lora_adapter")
        nan = float("nan")
        self.say(
            f"lora_adapter: {metadata['sft_steps']} steps, loss {metadata.get('initial_loss', nan):.3f} -> "
            f"{metadata.get('final_loss', nan):.3f}, {metadata['tokens_per_s']:.0f} tokens/s, "
            f"{metadata['seconds_per_step']:.2f} s/step, peak RSS {metadata['peak_rss_mb']:.0f} MB "
            f"(MLflow run {metadata.get('mlflow_run_id')})"
        )

    def _holdout_eval(self, step: StepRun) -> None:
        for name, check in sorted(step.checks().items()):
            self.say(f"  {'ok  ' if check['passed'] else 'FAIL'} {name}: {check['why']}")

    def _registered_model(self, step: StepRun) -> None:
        metadata = step.metadata("registered_model")
        name, champion = metadata.get("model_name"), metadata.get("champion")
        if str(metadata.get("unchanged")).lower() == "true":
            self.say(f"unchanged: {name} v{champion} (this training run) is already the champion")
        else:
            self.say(f"promoted: {name} v{champion} is the champion (previous: {metadata.get('previous')})")


def ingest_summary(execution: Execution, reporter: StageReporter) -> list[dict[str, Any]]:
    if execution.blocked_by and any(n.startswith(("raw_traces", "feedback_events")) for n in execution.blocked_by):
        last = reporter.partitions[-1]
        raise RuntimeError(
            f"{last['partition']}: blocking checks failed: {sorted(execution.blocked_by)} (run {last['run_id']})"
        )
    return reporter.partitions


def datasets_summary(execution: Execution) -> dict[str, Any]:
    metadata = execution.last("training_datasets").metadata("training_datasets")
    prefix = "training_datasets"
    folder = Path(metadata["path"])
    return {
        # config/<file> entries stay in the event log; the summary keeps the figures.
        **{key: value for key, value in metadata.items() if not key.startswith("config/")},
        # The keys `loop datasets build` has always printed.
        "created": metadata["new_version"],
        "counts": metadata["rows_by_task_type"],
        "paths": {name: str(folder / f"{name}.parquet") for name in metadata["rows"]},
        "mlflow_run_id": metadata.get("mlflow_run_id") or None,
        "checks": {name: c["passed"] for name, c in execution.checks().items() if name.startswith(prefix)},
        "blocked_by": {name: why for name, why in execution.blocked_by.items() if name.startswith(prefix)},
    }


def materialize_ingest(
    partitions: list[str] | None = None,
    progress: Progress | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[dict[str, Any]]:
    """The ingest assets for each day (default: every landing day); raise if a run or check fails."""
    defs = build_stage_defs()
    days = sorted(partitions) if partitions else landing_days(defs)
    reporter = StageReporter(defs, progress, len(days))
    execution = execute(INGEST, partitions=days, defs=defs, instance=instance, on_step=reporter)
    return ingest_summary(execution, reporter)


def materialize_scoring(
    partitions: list[str] | None = None,
    progress: Progress | None = None,
    instance: dg.DagsterInstance | None = None,
    warehouse_dir: str | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """The scoring assets for each ingested day; returns score_thresholds' document."""
    defs = build_stage_defs(warehouse_dir=warehouse_dir)
    days = sorted(partitions) if partitions else ingested_days(defs)
    op_config = {"score_thresholds": {} if log_to_mlflow else {"log_to_mlflow": False}}
    execute(SCORING, partitions=days, defs=defs, instance=instance, op_config=op_config,
            on_step=StageReporter(defs, progress, len(days)))
    return defs.resources["storage"].read_document("score_thresholds")


def materialize_datasets(
    progress: Progress | None = None,
    instance: dg.DagsterInstance | None = None,
    with_scoring: bool = False,
    warehouse_dir: str | None = None,
    datasets_dir: str | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Any]:
    """training_datasets with its blocking expectations (``with_scoring``: the scoring assets too,
    in the same plan). A failing expectation does not raise: it blocks what would train on the
    version, and the result names it (``blocked_by``)."""
    defs = build_stage_defs(warehouse_dir=warehouse_dir, datasets_dir=datasets_dir)
    storage = defs.resources["storage"]
    if not with_scoring and not (storage.table_partitions("scored_traces") and storage.document_path("score_thresholds").is_file()):
        raise FileNotFoundError(
            f"no scored traces / thresholds under {storage.warehouse_dir}: run `loop demo` or `loop thresholds sweep` "
            "(the scoring assets) first, or pass --traces DIR"
        )
    days = ingested_days(defs) if with_scoring else []
    mlflow_off = {} if log_to_mlflow else {"log_to_mlflow": False}
    execution = execute(
        DATASETS | SCORING if with_scoring else DATASETS,
        partitions=days,
        defs=defs,
        instance=instance,
        op_config={"score_thresholds": mlflow_off, "training_datasets": mlflow_off},
        on_step=StageReporter(defs, progress, len(days)),
    )
    return datasets_summary(execution)


def materialize_training(
    train_config: str | None = None,
    max_steps: int | None = None,
    progress: Progress | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """lora_adapter on the dataset version training_datasets materialized: the trainer runs in its
    own process (Dagster Pipes) and prints its progress bar to this terminal."""
    defs = build_stage_defs()
    config = {k: v for k, v in {"train_config": train_config, "max_steps": max_steps}.items() if v is not None}
    execution = execute(TRAINING, op_config={"lora_adapter": config}, defs=defs, instance=instance,
                        on_step=StageReporter(defs, progress))
    return training_summary(execution)


def training_summary(execution: Execution) -> dict[str, Any]:
    """lora_adapter's materialization figures and the run that made them."""
    step = execution.last("lora_adapter")
    return {"run_id": step.result.run_id, **step.metadata("lora_adapter")}


def materialize_evaluation(
    max_examples: int | None = None,
    progress: Progress | None = None,
    instance: dg.DagsterInstance | None = None,
    register: bool = True,
    candidate: dict[str, Any] | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """holdout_eval with its blocking gate checks and (``register``) registered_model after it. A
    refused candidate does not raise: the result says which check failed and why. ``candidate``: an
    explicit model to evaluate instead (``model``, ``adapter``, ``system_prompt``). ``evaluate=False``:
    register the candidate the last holdout_eval scored (``loop promote``)."""
    from loop_pipeline.core.evaluation import EvaluationOutcome, RegisteredModel

    defs = build_stage_defs()
    say = progress or _quiet
    config = {**(candidate or {}), **({"max_examples": max_examples} if max_examples else {})}
    selection = EVALUATION if evaluate else None
    if register:
        selection = REGISTRATION if selection is None else selection | REGISTRATION
    if selection is None:
        raise ValueError("materialize_evaluation: nothing to do (evaluate=False and register=False)")
    execution = execute(
        selection,
        op_config={"holdout_eval": config},
        defs=defs,
        instance=instance,
        verbose={"holdout_eval"},
        on_step=StageReporter(defs, say),
    )
    registered = read_result(defs, "registered_model", RegisteredModel) if execution.for_asset("registered_model") else None
    if register and registered is None:
        say("not promoted: the gate refused the candidate (see the failing checks above)")
    return {
        "run_id": execution.steps[0].result.run_id if execution.steps else None,
        "outcome": read_result(defs, "holdout_eval", EvaluationOutcome),
        "checks": execution.checks(),
        "registered": registered,
    }


__all__ = [
    "StageReporter",
    "materialize_datasets",
    "materialize_evaluation",
    "materialize_ingest",
    "materialize_scoring",
    "materialize_training",
    "open_instance",
]
