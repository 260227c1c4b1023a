"""Blocking checks on the ingest tables: every landing record is accounted for; schemas hold."""


import io
import json
import warnings

import dagster as dg
import fsspec
import pandera.errors
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from loop_pipeline.core.ingest import SourceFile
from loop_pipeline.core.ingest.lines import UnreadableFileError
from loop_pipeline.core.ingest.stream import open_stream
from loop_pipeline.defs.ingest.assets import FEEDBACK_EVENTS, QUARANTINED_RECORDS, RAW_TRACES
from loop_pipeline.defs.partitions import daily_partitions
from loop_pipeline.resources import LoopStorage
from loop_pipeline.schemas import FeedbackSchema, QuarantineSchema, TraceSchema

# Partitioned asset checks are a Dagster preview feature; we depend on it knowingly.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


NATIVE_FORMATS = ("native_jsonl", "native_parquet")


def count_records(source: SourceFile) -> int:
    """Records in one file, counted without the ingest code's decoders: non-blank lines (of the
    decompressed, UTF-8 text), or Parquet rows.

    A file that cannot be opened counts as one record (ingest quarantines it as one).
    """
    try:
        if source.location.lower().endswith(".parquet"):
            with fsspec.open(source.location, "rb") as handle:
                return pq.ParquetFile(handle).metadata.num_rows
        with open_stream(source.location) as stream:
            return sum(1 for line in io.BufferedReader(stream, 1 << 20) if line.strip())  # type: ignore[arg-type]
    except (OSError, pa.ArrowException, UnreadableFileError):
        return 1


def accounting_result(storage: LoopStorage, day: str, record_kind: str, table: str) -> dg.AssetCheckResult:
    """Landing records of one kind = valid + collapsed duplicates + quarantined + skipped.

    Native files are recounted from the files themselves (lines, Parquet rows). A file in another
    format holds records inside its lines (spans in an export request, observations and scores in a
    Langfuse export): its lines are recounted and must match what ingest read, and its records
    of this kind are the ones ingest extracted from them (the summary's per-file count).
    """
    summary = json.loads(storage.summary_path(day).read_text(encoding="utf-8"))
    by_file = {entry["file"]: entry for entry in summary.get("sources", [])}
    expected = 0
    lines_differ: list[str] = []
    for source in storage.landing_sources(day):
        if source.unsupported:
            continue  # not read, listed in the summary's unsupported_files
        entry = by_file.get(source.name)
        if entry is not None and entry.get("error"):
            # The file broke while being read (a truncated .gz): the records read before the
            # break and one unreadable record, as ingest counted them.
            expected += entry["records_in"].get(record_kind, 0)
            continue
        if entry is None or entry["format"] in NATIVE_FORMATS:
            if source.record_kind == record_kind:
                expected += count_records(source)
            continue
        if entry["lines"] is not None and count_records(source) != entry["lines"]:
            lines_differ.append(source.name)
        # A file of another format that could not be read at all is one quarantined record.
        expected += entry["records_in"].get(record_kind, 0)
    valid = storage.read_table(table, day).height
    quarantine = storage.read_table(QUARANTINED_RECORDS.path[-1], day)
    quarantined = quarantine.filter(pl.col("record_kind") == record_kind).height
    counts = summary["traces" if record_kind == "trace" else "feedback"]
    duplicates = counts["duplicates"]
    skipped = counts.get("skipped", 0)
    accounted = valid + duplicates + quarantined + skipped
    passed = accounted == expected and not lines_differ
    problems = []
    if accounted != expected:
        problems.append(f"{expected - accounted} landing records are unaccounted for")
    if lines_differ:
        problems.append(f"ingest read a different number of lines than {', '.join(lines_differ)} holds")
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "records_in_landing": expected,
            "valid": valid,
            "duplicates": duplicates,
            "quarantined": quarantined,
            "skipped": skipped,
            "unaccounted": expected - accounted,
            "files_with_unread_lines": len(lines_differ),
        },
        description=None if passed else "; ".join(problems),
    )


@dg.asset_check(asset=RAW_TRACES, blocking=True, partitions_def=daily_partitions)
def raw_traces_records_accounted(context: dg.AssetCheckExecutionContext, storage: LoopStorage) -> dg.AssetCheckResult:
    """Landing trace records = valid traces + collapsed duplicates + quarantined + skipped trace records."""
    return accounting_result(storage, context.partition_key, "trace", RAW_TRACES.path[-1])


@dg.asset_check(asset=FEEDBACK_EVENTS, blocking=True, partitions_def=daily_partitions)
def feedback_events_records_accounted(
    context: dg.AssetCheckExecutionContext, storage: LoopStorage
) -> dg.AssetCheckResult:
    """Landing feedback records = valid events + collapsed duplicates + quarantined + skipped feedback records."""
    return accounting_result(storage, context.partition_key, "feedback", FEEDBACK_EVENTS.path[-1])


def _schema_check(storage: LoopStorage, day: str, table: str, model) -> dg.AssetCheckResult:
    frame = storage.read_table(table, day)
    try:
        model.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return dg.AssetCheckResult(
            passed=False,
            metadata={"rows": frame.height, "failures": cases.height, "first_failures": dg.MetadataValue.md(str(cases.head(10)))},
            description=f"{cases.height} schema failures in {table}",
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows": frame.height})


@dg.asset_check(asset=RAW_TRACES, blocking=True, partitions_def=daily_partitions)
def raw_traces_match_schema(context: dg.AssetCheckExecutionContext, storage: LoopStorage) -> dg.AssetCheckResult:
    return _schema_check(storage, context.partition_key, RAW_TRACES.path[-1], TraceSchema)


@dg.asset_check(asset=FEEDBACK_EVENTS, blocking=True, partitions_def=daily_partitions)
def feedback_events_match_schema(context: dg.AssetCheckExecutionContext, storage: LoopStorage) -> dg.AssetCheckResult:
    return _schema_check(storage, context.partition_key, FEEDBACK_EVENTS.path[-1], FeedbackSchema)


@dg.asset_check(asset=QUARANTINED_RECORDS, blocking=True, partitions_def=daily_partitions)
def quarantined_records_match_schema(
    context: dg.AssetCheckExecutionContext, storage: LoopStorage
) -> dg.AssetCheckResult:
    return _schema_check(storage, context.partition_key, QUARANTINED_RECORDS.path[-1], QuarantineSchema)
