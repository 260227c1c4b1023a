"""Evaluation stage: the latest adapter on its dataset version's frozen holdout -> agreement,
confidence thresholds, coverage and cost (holdout_eval), then, only past the blocking gate, a new
MLflow registry version with alias `champion` (registered_model)."""

import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import polars as pl
from pydantic import Field

from loop_pipeline.core.evaluation import Candidate, EvalConfig
from loop_pipeline.defs.datasets.assets import TRAINING_DATASETS
from loop_pipeline.defs.ingest.assets import RAW_TRACES
from loop_pipeline.defs.training.assets import GPU_POOL, LORA_ADAPTER
from loop_pipeline.resources import LoopStorage, MlflowTracking

HOLDOUT_EVAL = dg.AssetKey("holdout_eval")
REGISTERED_MODEL = dg.AssetKey("registered_model")
DATASET_CHECKS = (
    "training_datasets_have_min_rows_per_task",
    "training_datasets_have_no_sensitive_text",
    "training_datasets_holdout_disjoint_from_train",
    "training_datasets_label_shares_within_bounds",
    "training_datasets_have_no_empty_targets",
)


def dataset_check_results(instance: dg.DagsterInstance, version: str) -> Optional[dict[str, bool]]:
    """The latest result of each blocking dataset check, if it was about ``version``."""
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
    return results or None


def frontier_cost_per_request(storage: LoopStorage, trace_ids: pl.Series) -> float:
    """What the frontier charged, on average, for the holdout's requests (reported or priced)."""
    traces = storage.read_partitions(RAW_TRACES.path[-1]).select("trace_id", "cost_usd")
    costs = traces.filter(pl.col("trace_id").is_in(trace_ids.to_list()) & pl.col("cost_usd").is_not_null())
    if costs.height == 0:
        raise ValueError("no frontier cost for the holdout's traces: cannot project a cost ratio")
    return float(costs.get_column("cost_usd").mean())


def champion_candidate(client, model_name: str, version: str) -> Candidate:
    """The champion's model folder: where training left it, else downloaded from the registry."""
    info = client.get_model_version(model_name, version)
    tags = info.tags
    path = tags.get("merged_path")
    if not path or not Path(path).is_dir():
        path = client.download_artifacts(info.run_id, "merged_model", tempfile.mkdtemp(prefix="loop-champion-"))
    return Candidate(path, None, tags.get("system_prompt", "keep"), f"{model_name} v{version} (champion)")


class HoldoutEvalConfig(dg.Config):
    max_examples: Optional[int] = Field(default=None, description="Evaluate on the first N holdout rows (quick run).")


@dg.asset(
    key=HOLDOUT_EVAL,
    group_name="evaluation",
    deps=[LORA_ADAPTER, TRAINING_DATASETS, RAW_TRACES],
    pool=GPU_POOL,
    kinds={"pytorch", "mlflow"},
    description="The latest adapter on the frozen holdout of the version it trained on: agreement with the "
    "frontier per task type, confidence threshold reaching the target agreement (fixed-sequence binomial "
    "tests on a calibration half), coverage and out-of-scope escalation on the other half, blended cost "
    "ratio, paired comparison with the champion; an MLflow run (experiment loop-evaluation) with plots.",
)
def holdout_eval(
    context: dg.AssetExecutionContext, config: HoldoutEvalConfig, storage: LoopStorage, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from loop_pipeline.core.evaluation import run_evaluation

    trained = storage.read_document(LORA_ADAPTER.path[-1])
    overrides = {"max_examples": config.max_examples} if config.max_examples else {}
    outcome = run_evaluation(
        trained,
        storage.datasets_root,
        EvalConfig.load(overrides),
        tracking=mlflow.target(),
        frontier_cost=lambda ids: frontier_cost_per_request(storage, ids),
        dataset_checks=lambda version: dataset_check_results(context.instance, version),
        champion=champion_candidate,
        progress=context.log.info,
    )
    storage.write_document(HOLDOUT_EVAL.path[-1], outcome)
    return dg.MaterializeResult(metadata=evaluation_metadata(outcome))


def evaluation_metadata(outcome: dict[str, Any]) -> dict[str, Any]:
    report = outcome["report"]
    tasks = report["tasks"]
    table = "| task type | agreement | threshold | coverage | served agreement | out-of-scope escalated |\n|---|---|---|---|---|---|\n"
    for name, t in tasks.items():
        table += (
            f"| {name} | {t['agreement']:.3f} | {t['threshold']} | {t['coverage']:.3f} | {t['served_agreement']} | "
            f"{t['out_of_scope_escalated']} |\n"
        )
    return {
        "dataset_version": report["dataset_version"],
        "candidate": report["model"],
        "coverage": report["coverage"],
        "blended_cost_ratio": report["cost"]["blended_cost_ratio"],
        "requests_per_s": report["requests_per_s"],
        "promote": outcome["decision"]["promote"],
        "tasks": dg.MetadataValue.md(table),
        "decision": dg.MetadataValue.json(outcome["decision"]),
        **{f"plot_{Path(plot).stem}": dg.MetadataValue.path(plot) for plot in outcome["plots"]},
        "mlflow_run_id": outcome["mlflow_run_id"],
    }


@dg.asset(
    key=REGISTERED_MODEL,
    group_name="evaluation",
    deps=[HOLDOUT_EVAL],
    kinds={"mlflow"},
    description="A new version of the MLflow registered model for a candidate that passed the gate, tagged with "
    "dataset version, base model, thresholds, coverage, agreement and cost ratio; alias `champion` moves to "
    "it and the old champion becomes `previous`. Blocking checks on holdout_eval stop it otherwise.",
)
def registered_model(context: dg.AssetExecutionContext, storage: LoopStorage, mlflow: MlflowTracking) -> dg.MaterializeResult:
    from loop_pipeline.core.evaluation import register_and_promote

    outcome = storage.read_document(HOLDOUT_EVAL.path[-1])
    if not outcome["decision"]["promote"]:
        reasons = [r for part in outcome["decision"]["parts"].values() if not part["passed"] for r in part["reasons"]]
        raise dg.Failure(description="the gate refused this candidate: " + "; ".join(reasons))
    move = register_and_promote(outcome, mlflow.target(), EvalConfig.load())
    storage.write_document(REGISTERED_MODEL.path[-1], move)
    context.log.info(
        f"{move['model_name']} v{move['champion']} is the champion"
        + (" already (same training run)" if move["unchanged"] else f" (previous: {move['previous']})")
    )
    return dg.MaterializeResult(metadata={k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in move.items() if v is not None})
