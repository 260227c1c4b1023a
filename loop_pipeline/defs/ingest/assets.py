"""Landing files of one day become canonical traces, feedback events and quarantined records."""


from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import polars as pl

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import IngestConfig, IngestResult, ingest
from loop_pipeline.core.ingest.writing import sink_parquet_atomic
from loop_pipeline.defs.partitions import daily_partitions
from loop_pipeline.resources import LoopConfigs, LoopStorage

RAW_TRACES = dg.AssetKey("raw_traces")
FEEDBACK_EVENTS = dg.AssetKey("feedback_events")
QUARANTINED_RECORDS = dg.AssetKey("quarantined_records")
INGEST_GROUP = "ingest"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_TRACES,
            description="Canonical LLM-call traces that arrived on the day, validated (TraceSchema), "
            "one row per trace_id; identical copies collapsed, costs computed where the source had none. "
            "Landing files may be native records or exports of other tools (OTel GenAI, OTLP/JSON, OpenInference, "
            "Langfuse, MLflow, LiteLLM, OpenAI Batch): the format is detected per file.",
            group_name=INGEST_GROUP,
            kinds={"polars", "parquet"},
        ),
        dg.AssetSpec(
            FEEDBACK_EVENTS,
            description="Feedback events that arrived on the day (FeedbackSchema), possibly for older traces.",
            group_name=INGEST_GROUP,
            kinds={"polars", "parquet"},
        ),
        dg.AssetSpec(
            QUARANTINED_RECORDS,
            description="Every landing record that could not be used, with a machine-readable reason.",
            group_name=INGEST_GROUP,
            kinds={"polars", "parquet"},
        ),
    ],
    partitions_def=daily_partitions,
    name="landed_records",
)
def landed_records(
    context: dg.AssetExecutionContext, storage: LoopStorage, configs: LoopConfigs
) -> Iterator[dg.MaterializeResult]:
    day = context.partition_key
    config, prices = configs.load(IngestConfig), configs.load(PriceTable)
    sources = storage.landing_sources(day)
    if not sources:
        context.log.warning(f"no landing files for {day} under {storage.landing_url}: writing empty tables")
    # The run's rows wait on the warehouse's disk (not in memory) until the tables are written.
    with ingest(sources, config, prices, progress=context.log.info, spill_dir=storage.warehouse_dir) as result:
        yield from _write_tables(context, storage, configs, result, config, prices)


def _write_tables(
    context: dg.AssetExecutionContext,
    storage: LoopStorage,
    configs: LoopConfigs,
    result: IngestResult,
    config: IngestConfig,
    prices: PriceTable,
) -> Iterator[dg.MaterializeResult]:
    day = context.partition_key
    summary = result.summary(include_sources=True)
    if result.unsupported:
        listed = ", ".join(f"{entry['file']} ({entry['bytes']} bytes)" for entry in result.unsupported)
        context.log.warning(f"{day}: {len(result.unsupported)} landing file(s) not read (unsupported_file): {listed}")
    storage.write_summary(day, summary)
    formats = ", ".join(f"{name}: {entry['files']} file(s)" for name, entry in summary["formats"].items()) or "no files"
    context.log.info(
        f"{day}: {summary['records_in']} records in, {summary['valid']} valid, "
        f"{summary['duplicates']} duplicates, {summary['quarantined']} quarantined, {summary['skipped']} skipped ({formats})"
    )
    used = configs.metadata(config, prices)
    for key, table, kind in ((RAW_TRACES, "traces", "trace"), (FEEDBACK_EVENTS, "feedback", "feedback")):
        path = storage.table_path(key.path[-1], day)
        sink_parquet_atomic(path, result.scan(table))
        yield dg.MaterializeResult(asset_key=key, metadata={**_table_metadata(result, table, kind, path), **used})
    path = storage.table_path(QUARANTINED_RECORDS.path[-1], day)
    sink_parquet_atomic(path, result.scan("quarantine"))
    yield dg.MaterializeResult(
        asset_key=QUARANTINED_RECORDS,
        metadata={
            "dagster/row_count": result.height("quarantine"),
            "path": dg.MetadataValue.path(str(path)),
            "quarantined_by_reason": dg.MetadataValue.json(summary["quarantined_by_reason"]),
            **used,
        },
    )


def _table_metadata(result: IngestResult, table: str, kind: str, path: Path) -> dict[str, Any]:
    """Rows, where they came from and what was held back, for raw_traces or feedback_events."""
    counts = result.counts[kind]
    frame = result.scan(table)
    metadata: dict[str, Any] = {
        "dagster/row_count": result.height(table),
        "path": dg.MetadataValue.path(str(path)),
        "records_in": counts.records_in,
        "duplicates": counts.duplicates,
        "quarantined": counts.quarantined,
        "files": len(result.files),
        "skipped": counts.skipped,
        "rows_by_source_format": dg.MetadataValue.json(_counts_by(frame, "source_format")),
        # Landing files ingest does not read (unknown extension), with their size: never silently passed over.
        "unsupported_files": dg.MetadataValue.json(list(result.unsupported)),
    }
    if kind == "trace":
        metadata["rows_by_task_type"] = dg.MetadataValue.json(_counts_by(frame, "task_type"))
        metadata["skipped_by_reason"] = dg.MetadataValue.json(counts.skipped_by_reason)
        metadata["cost_usd"] = float(frame.select(pl.col("cost_usd").sum()).collect(engine="streaming").item() or 0.0)
    else:
        metadata["rows_by_kind"] = dg.MetadataValue.json(_counts_by(frame, "kind"))
    return metadata


def _counts_by(frame: pl.LazyFrame, column: str) -> dict[str, int]:
    grouped = frame.group_by(column).len().collect(engine="streaming").sort(column, nulls_last=True)
    return {str(value): int(n) for value, n in grouped.iter_rows()}
