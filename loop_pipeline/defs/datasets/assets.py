"""Datasets stage: scored traces -> one immutable, versioned set of sft / kto / dpo / holdout."""

import dagster as dg
import polars as pl

from loop_pipeline.core import dedup, redaction, scoring
from loop_pipeline.core.contracts import DatasetVersion
from loop_pipeline.core.datasets import DatasetConfig, build_dataset_version
from loop_pipeline.defs.ingest.assets import RAW_TRACES
from loop_pipeline.defs.scoring.assets import SCORE_THRESHOLDS, SCORED_TRACES, MlflowLoggingConfig
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking

TRAINING_DATASETS = dg.AssetKey("training_datasets")


@dg.asset(
    key=TRAINING_DATASETS,
    group_name="datasets",
    deps=[SCORED_TRACES, SCORE_THRESHOLDS, RAW_TRACES],
    io_manager_key="results_io",
    kinds={"huggingface", "parquet"},
    description="sft / kto / dpo / holdout as Parquet with a dataset card, redacted, deduplicated, "
    "split by group with a frozen holdout; version = content hash (reruns reuse it); each version "
    "is an MLflow run with the datasets as inputs. Blocking expectations guard what trains on it.",
)
def training_datasets(
    context: dg.AssetExecutionContext,
    config: MlflowLoggingConfig,
    storage: LoopStorage,
    mlflow: MlflowTracking,
    configs: LoopConfigs,
) -> dg.Output[DatasetVersion]:
    dataset_config = configs.load(DatasetConfig)
    redaction_config = configs.load(redaction.RedactionConfig)
    dedup_config = configs.load(dedup.DedupConfig)
    days = storage.table_partitions(SCORED_TRACES.path[-1])
    # Scans: curation reads only the columns it uses, and holds the rows once (core/datasets/curate.py).
    scored = _scan_partitions(storage, SCORED_TRACES.path[-1])
    traces = _scan_partitions(storage, RAW_TRACES.path[-1]).unique("trace_id", keep="first", maintain_order=True)
    # Per task type: its certified threshold, "acceptance" (the fallback) or None (keeps no output).
    thresholds = scoring.keep_rules(storage.read_document(SCORE_THRESHOLDS.path[-1])["thresholds"])
    summary = build_dataset_version(
        scored,
        traces,
        thresholds,
        storage.datasets_root,
        config=dataset_config,
        redaction_config=redaction_config,
        dedup_config=dedup_config,
        source_partitions=days,
        tracking=mlflow.target() if config.log_to_mlflow else None,
        progress=context.log.info,
    )
    folder = storage.datasets_root / summary["version"]
    version = DatasetVersion(
        version=summary["version"],
        path=str(folder),
        new_version=summary["created"],
        rows=summary["rows"],
        rows_by_task_type=summary["counts"],
    )
    return dg.Output(
        version,
        metadata={
            "version": summary["version"],
            "new_version": summary["created"],
            "path": dg.MetadataValue.path(str(folder)),
            "rows": dg.MetadataValue.json(summary["rows"]),
            "rows_by_task_type": dg.MetadataValue.json(summary["counts"]),
            "redacted": dg.MetadataValue.json(summary["redacted"]),
            "dedup": dg.MetadataValue.json(summary["dedup"]),
            # The router's own traffic: rows per route of each dataset, the locally served outputs
            # left out of sft for want of an explicit positive signal, the shadows' live agreement.
            "rows_by_route": dg.MetadataValue.json(summary["rows_by_route"]),
            "local_excluded_unverified": summary["router"]["local_excluded_unverified"],
            "shadow_agreement": dg.MetadataValue.json(summary["router"]["shadow_agreement"]),
            "mlflow_run_id": summary["mlflow_run_id"] or "",
            **configs.metadata(dataset_config, redaction_config, dedup_config),
        },
    )


def _scan_partitions(storage: LoopStorage, table: str) -> pl.LazyFrame:
    """Every materialized partition of ``table``, in day order, as one scan."""
    paths = [storage.table_path(table, day) for day in storage.table_partitions(table)]
    if not paths:
        raise FileNotFoundError(f"{table} has no materialized partitions under {storage.warehouse_dir}")
    return pl.scan_parquet(paths)
