"""Building rows: what every adapter fills (candidate traces, feedback, quarantine, skip counts)
and how the result of one file is finished (task types, typing, feedback kinds).

An adapter turns each source record it understands into one *text-typed* candidate row (the
canonical fields as text, messages as ``[{role, content}]``) or a quarantine row with a reason,
and counts the records it deliberately skips (tool / agent spans, failed calls, batch requests).
The rows are then typed and checked by the same code as the native format
(:func:`native.type_traces`), so a token count of ``"many"`` is ``wrong_type`` whatever the source.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from loop_pipeline.core.ingest import native
from loop_pipeline.core.ingest.formats.mapping import (
    SKIP_KIND,
    FeedbackMapping,
    TaskTypeMapping,
    apply_feedback_mapping,
    apply_task_type,
    meta_column,
)
from loop_pipeline.core.ingest.formats.records import read_units
from loop_pipeline.core.ingest.formats.values import MappingError, compact_json, id_text, json_text, lookup, text, time_text
from loop_pipeline.schemas.traces import MESSAGES_DTYPE

# Skipped records are counted by reason, per record kind; these are the reasons adapters use.
SKIP_TOOL = "tool_span"  # a tool execution (OTel execute_tool, OpenInference / Langfuse / MLflow TOOL)
SKIP_AGENT = "agent_span"  # an agent, chain or workflow step around the LLM calls
SKIP_OTHER = "other_span"  # any other non-LLM operation: embeddings, retrieval, guardrails, plain spans
SKIP_FAILED = "failed_call"  # an LLM call that ended in an error: no output to learn from
SKIP_BATCH_REQUEST = "batch_request"  # an OpenAI Batch input line: the request half of an output line
SKIP_UNMAPPED_FEEDBACK = "unmapped_feedback"  # a score the feedback mapping says to skip (e.g. free text)
SKIP_SUPERSEDED = "superseded_feedback"  # an MLflow assessment marked invalid (overridden)


TRACE_TEXT_FIELDS = tuple(name for name in native.TRACE_FIELDS if name != "messages")


@dataclass(frozen=True)
class Match:
    """What the task-type rules look at for one call."""

    span_name: str | None = None
    trace_name: str | None = None
    tags: tuple[str, ...] = ()
    prompt_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def trace_schema(metadata_keys: Iterable[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {name: pl.String for name in TRACE_TEXT_FIELDS}
    schema["messages"] = MESSAGES_DTYPE
    schema.update(
        {
            "metadata": pl.String,
            "source_record": pl.Int64,
            "raw": pl.String,
            "_reason": pl.String,
            "_detail": pl.String,
            "_scope": pl.String,
            "_span_name": pl.String,
            "_trace_name": pl.String,
            "_prompt_name": pl.String,
            "_tags": pl.List(pl.String),
        }
    )
    for key in metadata_keys:
        schema[meta_column(key)] = pl.String
    return schema


FEEDBACK_RAW_SCHEMA: dict[str, pl.DataType] = {
    "feedback_id": pl.String,
    "trace_id": pl.String,
    "timestamp": pl.String,
    "edited_output": pl.String,
    "source": pl.String,
    "annotator_id": pl.String,
    "_name": pl.String,
    "_value_type": pl.String,
    "_raw_value": pl.String,
    "_label": pl.String,
    "_kind_hint": pl.String,
    "_scope": pl.String,
    "_scope_kind": pl.String,
    "source_record": pl.Int64,
    "raw": pl.String,
    "_reason": pl.String,
    "_detail": pl.String,
}


def feedback_value(value: Any, name: str) -> tuple[str | None, str | None, str | None]:
    """(value type, value text, label) of a score value as the formats give it."""
    if value is None:
        return None, None, None
    if isinstance(value, bool):
        return "boolean", "true" if value else "false", None
    if isinstance(value, (int, float)):
        return "number", repr(value), None
    if isinstance(value, str):
        return "label", None, value
    return "text", None, json_text(value)


@dataclass
class Rows:
    """Collects an adapter's candidate rows, quarantine rows and skip counts for one file."""

    task_type: TaskTypeMapping
    traces: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # (record kind, reason) -> n

    def skip(self, kind: str, reason: str, n: int = 1) -> None:
        self.skipped[(kind, reason)] += n

    def bad(self, kind: str, record: int, raw: str | None, reason: str, detail: str, record_id: str | None = None) -> None:
        row = {"source_record": record, "raw": raw, "_reason": reason, "_detail": detail}
        if kind == "trace":
            row["trace_id"] = record_id
            self.traces.append(row)
        else:
            row["feedback_id"] = record_id
            self.feedback.append(row)

    def trace(
        self,
        record: int,
        raw: str | None,
        fields: Mapping[str, Any],
        match: Match,
        metadata: Mapping[str, Any],
        scope: str | None = None,
    ) -> None:
        row = {name: fields.get(name) for name in TRACE_TEXT_FIELDS}
        row["messages"] = fields.get("messages")
        row.update(
            {
                "metadata": compact_json({k: v for k, v in metadata.items()}),
                "source_record": record,
                "raw": raw,
                "_scope": id_text(scope),
                "_span_name": match.span_name if isinstance(match.span_name, str) else None,
                "_trace_name": match.trace_name if isinstance(match.trace_name, str) else None,
                "_prompt_name": match.prompt_name if isinstance(match.prompt_name, str) else None,
                "_tags": [t for t in match.tags if isinstance(t, str)],
            }
        )
        for key in self.task_type.metadata_keys:
            value = lookup(match.metadata, key)
            row[meta_column(key)] = None if value is None else (value if isinstance(value, str) else json_text(value))
        self.traces.append(row)

    def score(
        self,
        record: int,
        raw: str | None,
        *,
        timestamp: Any,
        name: str | None,
        value: Any,
        source: str,
        trace_id: str | None = None,
        scope: str | None = None,
        scope_kind: str = "trace",
        label: str | None = None,
        annotator_id: Any = None,
        feedback_id: Any = None,
        kind_hint: str | None = None,
    ) -> None:
        value_type, value_text, value_label = feedback_value(value, "value")
        if value_type is None and label is not None:
            value_type = "label"  # a label without a score: the labels table may give it a value
        try:
            timestamp_text = time_text(timestamp, "timestamp")
            annotator = text(annotator_id, "annotator id")
        except MappingError as exc:
            self.bad("feedback", record, raw, exc.reason, exc.detail, id_text(feedback_id))
            return
        self.feedback.append(
            {
                "feedback_id": id_text(feedback_id),
                "trace_id": id_text(trace_id),
                "timestamp": timestamp_text,
                "edited_output": None,
                "source": source,
                "annotator_id": annotator,
                "_name": name,
                "_value_type": value_type,
                "_raw_value": value_text,
                "_label": label if label is not None else value_label,
                "_kind_hint": kind_hint,
                "_scope": id_text(scope),
                "_scope_kind": scope_kind,
                "source_record": record,
                "raw": raw,
            }
        )

    def trace_frame(self) -> pl.DataFrame:
        schema = trace_schema(self.task_type.metadata_keys)
        return pl.DataFrame({name: [row.get(name) for row in self.traces] for name in schema}, schema=schema)

    def feedback_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {name: [row.get(name) for row in self.feedback] for name in FEEDBACK_RAW_SCHEMA}, schema=FEEDBACK_RAW_SCHEMA
        )


@dataclass
class FormatOutput:
    """An adapter's result for one file.

    ``traces`` are typed and checked (``_reason`` set on failures); ``feedback`` is mapped to
    canonical kinds but its ``trace_id`` may still be null with a ``_scope`` (a trace or session)
    that the pipeline resolves once every file is read.
    """

    traces: pl.DataFrame
    feedback: pl.DataFrame
    skipped: Counter
    lines: int

    def records_in(self) -> dict[str, int]:
        counts = {"trace": self.traces.height, "feedback": self.feedback.height}
        for (kind, _), n in self.skipped.items():
            counts[kind] += n
        return counts


def finish(
    traces: pl.DataFrame,
    feedback: pl.DataFrame,
    skipped: Counter,
    lines: int,
    task_type: TaskTypeMapping,
    feedback_mapping: FeedbackMapping,
) -> FormatOutput:
    """Task types, typing and checks for traces; kinds for feedback (``skip`` rows counted out).

    Rows come back in file order (``source_record``), whichever path produced them.
    """
    traces = native.type_traces(apply_task_type(traces.sort("source_record", maintain_order=True), task_type))
    feedback = feedback.sort("source_record", maintain_order=True)
    if feedback.height:
        feedback = apply_feedback_mapping(feedback, feedback_mapping)
        dropped = feedback.filter((pl.col("kind") == SKIP_KIND) & pl.col("_reason").is_null())
        if dropped.height:
            skipped = Counter(skipped)
            skipped[("feedback", SKIP_UNMAPPED_FEEDBACK)] += dropped.height
            feedback = feedback.filter(~((pl.col("kind") == SKIP_KIND) & pl.col("_reason").is_null()))
    else:
        feedback = feedback.with_columns(
            pl.lit(None, dtype=pl.String).alias(name) for name in ("kind", "value", "label")
        )
    return FormatOutput(traces, feedback, skipped, lines)


def finish_rows(rows: Rows, lines: int, feedback_mapping: FeedbackMapping) -> FormatOutput:
    return finish(rows.trace_frame(), rows.feedback_frame(), rows.skipped, lines, rows.task_type, feedback_mapping)


@dataclass(frozen=True)
class AdapterContext:
    """Everything an adapter may need besides the file itself."""

    task_type: TaskTypeMapping
    feedback: FeedbackMapping
    max_record_bytes: int
    max_document_bytes: int
    decode_slice_rows: int
    prices: Any  # costs.PriceTable
    openai_batch_price_factor: float = 0.5
    # OpenAI Batch: request bodies by custom_id, from the input files joined to an output file.
    batch_requests: Mapping[str, Any] = field(default_factory=dict)

    def rows(self) -> Rows:
        return Rows(self.task_type)


def read_items(data: str | bytes, context: "AdapterContext", handle: Callable[[Any, int, str, "Rows"], None]) -> "FormatOutput":
    """The document reader most formats share: every JSON object of the file (each element of a
    top-level array) goes to ``handle(item, record, raw, rows)``; unreadable lines and documents are
    quarantined as traces."""
    read_result = read_units(data, context.max_record_bytes, context.max_document_bytes)
    rows = context.rows()
    for record, raw, reason, detail in read_result.bad:
        rows.bad("trace", record, raw, reason, detail)
    for unit in read_result.units:
        items = unit.value if isinstance(unit.value, list) else [unit.value]
        for item in items:
            handle(item, unit.record, unit.raw if len(items) == 1 else compact_json(item), rows)
    return finish_rows(rows, read_result.lines, context.feedback)
