"""Evaluation stage: the adapter that ``lora_adapter`` hands over, on the frozen holdout of the
dataset version it trained on -> agreement, confidence thresholds, coverage and cost
(holdout_eval); then, only past the blocking gate, a new MLflow registry version with alias
`champion` (registered_model)."""

import enum
from pathlib import Path
from typing import Any, Optional

import dagster as dg
from pydantic import Field, model_validator

from loop_pipeline.core.contracts import TrainedAdapter
from loop_pipeline.core.evaluation import Candidate, EvalConfig, EvaluationOutcome, RegisteredModel
from loop_pipeline.core.evaluation.gate import DatasetChecks
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.defs.datasets import checks as dataset_checks_module
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.defs.ingest.assets import RAW_TRACES
from loop_pipeline.defs.training.assets import GPU_POOL, LORA_ADAPTER
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking

HOLDOUT_EVAL = dg.AssetKey("holdout_eval")
REGISTERED_MODEL = dg.AssetKey("registered_model")
RESULTS_IO = "results_io"


def blocking_dataset_checks() -> tuple[str, ...]:
    """Every blocking check defined on training_datasets (defs/datasets/checks.py): the gate wants
    each one recorded and passed, so a check added there is required here without a list to edit."""
    names = {
        spec.name
        for definition in dg.load_asset_checks_from_modules([dataset_checks_module])
        for spec in definition.check_specs
        if spec.asset_key == TRAINING_DATASETS and spec.blocking
    }
    return tuple(sorted(names))


DATASET_CHECKS = blocking_dataset_checks()


def dataset_check_results(instance: dg.DagsterInstance, version: str) -> DatasetChecks:
    """Every blocking dataset check, with the latest result of those last run on ``version`` (a
    check whose latest run was about another version, or that never ran, is missing)."""
    keys = [dg.AssetCheckKey(TRAINING_DATASETS, name) for name in DATASET_CHECKS]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    results = {}
    for key, record in records.items():
        evaluation = record.evaluation
        if evaluation is None:
            continue
        checked = evaluation.metadata.get("version")
        if checked is not None and checked.value == version:
            results[key.name] = bool(evaluation.passed)
    return DatasetChecks(required=DATASET_CHECKS, results=results)


class SystemPrompt(str, enum.Enum):
    keep = "keep"
    drop = "drop"
    none = "none"


class HoldoutEvalConfig(dg.Config):
    """By default the lora_adapter input's model is evaluated; ``model`` (+ ``adapter``) evaluates
    an explicit folder instead, on the same dataset version (registered_model refuses that)."""

    max_examples: Optional[int] = Field(default=None, description="Evaluate on the first N holdout rows (quick run).")
    model: Optional[str] = Field(default=None, description="A model folder to evaluate instead of the lora_adapter's.")
    adapter: Optional[str] = Field(default=None, description="A LoRA adapter folder applied on `model`.")
    system_prompt: Optional[SystemPrompt] = Field(
        default=None, description="keep | drop | none: the prompt transform (default: as trained; keep for `model`)."
    )

    @model_validator(mode="after")
    def _adapter_needs_model(self) -> "HoldoutEvalConfig":
        if self.adapter and not self.model:
            raise ValueError("adapter needs model (the base it applies to)")
        return self


def chosen_candidate(config: HoldoutEvalConfig, trained: TrainedAdapter) -> Candidate | None:
    """The candidate the run config asks for; None: the lineage's own adapter, as trained."""
    prompt = config.system_prompt.value if config.system_prompt else None
    if config.model:
        return Candidate(model_path=config.model, adapter_path=config.adapter, system_prompt=prompt or "keep", label=config.model)
    if prompt is None or prompt == trained.system_prompt:
        return None
    return Candidate.from_adapter(trained).model_copy(update={"system_prompt": prompt})


def report_folder(config: HoldoutEvalConfig, trained: TrainedAdapter, storage: LoopStorage) -> Path:
    """Beside the adapter evaluated (the training run's, or --adapter's), else under LOOP_HOME."""
    if config.model:
        beside = Path(config.adapter) if config.adapter else storage.datasets_root
    else:
        beside = Path(trained.adapter_path)
    return beside.parent / f"eval-{trained.dataset_version}"


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tasks_table(outcome: EvaluationOutcome) -> str:
    """One row per task type (docs/metrics.md). sim_ columns: the simulator's gold, simulated traffic only."""
    report = outcome.report
    table = (
        "| task type | rows | agreement with the frontier | agreement with the reference | threshold | coverage | "
        "served agreement | out-of-scope escalated | sim accuracy routed (simulated gold) | "
        "sim accuracy all frontier (simulated gold) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for name, t in report.tasks.items():
        table += (
            f"| {name} | {t.n} | {_figure(t.agreement_frontier)} | {_figure(t.agreement_reference)} "
            f"(n={t.n_with_reference}) | {_figure(t.threshold, 6)} | {_figure(t.coverage)} | {_figure(t.served_agreement)} | "
            f"{_figure(t.out_of_scope_escalated)} | {_figure(t.sim_accuracy_routed)} | {_figure(t.sim_accuracy_all_frontier)} |\n"
        )
    return table


def cost_table(outcome: EvaluationOutcome) -> str:
    report, t = outcome.report, outcome.report.throughput
    rows = [
        ("device kind", t.device_kind),
        ("price per hour (USD)", f"{report.cost.local_price_per_hour:g}"),
        ("model load (s, not in the rates)", f"{t.load_seconds:.1f}"),
        (f"requests/s one at a time ({t.one_at_a_time_n} timed)", f"{t.one_at_a_time_requests_per_s:.2f}"),
        (f"requests/s in micro-batches of {t.batch_size}", f"{t.batched_requests_per_s:.2f}"),
        ("rates used for the cost", report.cost.throughput_source),
        ("blended cost ratio, micro-batched", f"{report.cost.blended_cost_ratio:.4f}"),
        ("blended cost ratio, one at a time", f"{report.cost_one_at_a_time.blended_cost_ratio:.4f}"),
    ]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def evaluation_metadata(outcome: EvaluationOutcome) -> dict[str, Any]:
    report = outcome.report
    return {
        "dataset_version": report.dataset_version,
        "candidate": report.model,
        "from_lineage": outcome.from_lineage,
        "training_run_id": str(outcome.trained.mlflow_run_id),
        "certified_against": report.certified_against,
        "coverage": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "blended_cost_ratio_one_at_a_time": report.cost_one_at_a_time.blended_cost_ratio,
        "requests_per_s": report.requests_per_s,
        "device_kind": report.throughput.device_kind,
        "promote": outcome.decision.promote,
        "tasks": dg.MetadataValue.md(tasks_table(outcome)),
        "task_figures": dg.MetadataValue.json({n: t.model_dump(mode="json", exclude={"confusions"}) for n, t in report.tasks.items()}),
        "throughput_and_cost": dg.MetadataValue.md(cost_table(outcome)),
        "decision": dg.MetadataValue.json(outcome.decision.model_dump(mode="json")),
        **{f"plot_{Path(plot).stem}": dg.MetadataValue.path(plot) for plot in outcome.plots},
        "mlflow_run_id": outcome.mlflow_run_id,
    }


@dg.asset(
    key=HOLDOUT_EVAL,
    group_name="evaluation",
    ins={"lora_adapter": dg.AssetIn(key=LORA_ADAPTER, input_manager_key=RESULTS_IO)},
    deps=[TRAINING_DATASETS, RAW_TRACES],
    io_manager_key=RESULTS_IO,
    pool=GPU_POOL,
    kinds={"pytorch", "mlflow"},
    description="The lora_adapter result on the frozen holdout of the version it trained on (all traffic of the "
    "holdout groups, answered as the router serves it: arrival order, micro-batches): agreement with the frontier "
    "and with the curated reference per task type, confidence threshold reaching the target agreement (selected "
    "on a calibration half, certified on the other), coverage and out-of-scope escalation, requests/s one at a "
    "time and micro-batched on the device it ran on, blended cost ratio at both, paired comparison with the "
    "champion; an MLflow run (experiment loop-evaluation) with plots.",
)
def holdout_eval(
    context: dg.AssetExecutionContext,
    config: HoldoutEvalConfig,
    lora_adapter: TrainedAdapter,
    configs: LoopConfigs,
    storage: LoopStorage,
    mlflow: MlflowTracking,
) -> dg.Output[EvaluationOutcome]:
    from loop_pipeline.core.evaluation import frontier_cost, run_evaluation

    eval_config = configs.load(EvalConfig)
    if config.max_examples:
        eval_config = eval_config.with_overrides({"max_examples": config.max_examples}, source="holdout_eval config")
    tasks = configs.load(TasksConfig)
    outcome = run_evaluation(
        lora_adapter,
        eval_config,
        tasks,
        tracking=mlflow.target(),
        frontier_cost=lambda ids: frontier_cost(storage.read_partitions(RAW_TRACES.path[-1]), ids),
        dataset_checks=dataset_check_results(context.instance, lora_adapter.dataset_version),
        output_dir=report_folder(config, lora_adapter, storage),
        candidate=chosen_candidate(config, lora_adapter),
        progress=context.log.info,
    )
    return dg.Output(outcome, metadata={**evaluation_metadata(outcome), **configs.metadata(eval_config, tasks)})


@dg.asset(
    key=REGISTERED_MODEL,
    group_name="evaluation",
    ins={"holdout_eval": dg.AssetIn(key=HOLDOUT_EVAL)},
    io_manager_key=RESULTS_IO,
    kinds={"mlflow"},
    description="A new version of the MLflow registered model for a candidate that passed the gate, tagged with "
    "dataset version, base model, thresholds, coverage, agreement, cost ratio and the serving spec (a loadable "
    "MLflow model of the training run: merged weights and tokenizer); alias `champion` moves to "
    "it and the old champion becomes `previous`. Blocking checks on holdout_eval stop it otherwise; an "
    "evaluation of an explicit model folder is refused.",
)
def registered_model(
    context: dg.AssetExecutionContext, holdout_eval: EvaluationOutcome, configs: LoopConfigs, mlflow: MlflowTracking
) -> dg.Output[RegisteredModel]:
    from loop_pipeline.core.evaluation import register_and_promote
    from loop_pipeline.core.registry import RegistryError

    eval_config, tasks = configs.load(EvalConfig), configs.load(TasksConfig)
    try:
        move = register_and_promote(holdout_eval, mlflow.target(), eval_config, tasks)
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(
        f"{move.model_name} v{move.champion} is the champion"
        + (" already (same training run)" if move.unchanged else f" (previous: {move.previous})")
    )
    metadata: dict[str, Any] = {k: v for k, v in move.model_dump(exclude={"tags"}).items() if v is not None}
    metadata["tags"] = dg.MetadataValue.json(move.tags)
    return dg.Output(move, metadata={**metadata, **configs.metadata(eval_config, tasks)})
