"""OTLP/JSON as the OpenTelemetry Collector's file exporter writes it: one export request per line.

``{"resourceSpans": [{"resource": {"attributes": [...]}, "scopeSpans": [{"spans": [...]}]}]}`` with
key/value attribute lists. The mapping is the one of :mod:`otel` (same attribute names, same
rules); this package only makes it fast (``decoding``: the fixed nested types, ``tables``: spans
and attribute columns, ``fast``: the vectorized mapping, ``per_span``: the fallback):

- a slice of lines is decoded by polars in one call into a fixed nested type, exploded to one row
  per span, and the attributes it needs are pivoted into columns;
- plain spans (``gen_ai.*`` scalars, messages that are JSON text with text parts, evaluation events)
  are mapped with vectorized expressions;
- a line that does not decode, or holds a span outside that plain subset (OpenInference or
  deprecated attributes, tool-call parts, nested attribute values, messages on events, ...), is
  read with ``json.loads`` and mapped span by span by :func:`otel.map_span`, so both paths give
  the same rows (a test holds them to it). A span with ``openinference.span.kind`` (Phoenix
  exporting over OTLP) is mapped by :func:`openinference.map_span` instead.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from loop_pipeline.core.ingest.formats.otlp.fast import fast_rows
from loop_pipeline.core.ingest.formats.otlp.per_span import map_line
from loop_pipeline.core.ingest.formats.rows import FEEDBACK_RAW_SCHEMA, AdapterContext, FormatOutput, finish, trace_schema
from loop_pipeline.core.ingest.lines import read_lines, too_deep
from loop_pipeline.core.ingest.safejson import TOO_DEEP, TooDeeplyNested

FORMAT = "otlp"


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    """Slices of ``decode_slice_rows`` lines through the fast path; what it leaves, span by span."""
    lines = read_lines(data)
    trace_parts: list[pl.DataFrame] = []
    feedback_parts: list[pl.DataFrame] = []
    skipped: Counter = Counter()
    rows = context.rows()
    schema = trace_schema(context.task_type.metadata_keys)
    oversized = lines.get_column("raw").str.len_bytes() > context.max_record_bytes
    for record, raw in lines.filter(oversized).iter_rows():
        rows.bad("trace", record, raw, "oversized_record", f"record is {len(raw.encode('utf-8'))} bytes, over the {context.max_record_bytes} byte limit")
    lines = lines.filter(~oversized)
    deep = too_deep(lines.get_column("raw"))
    for record, raw in lines.filter(deep).iter_rows():
        rows.bad("trace", record, raw, TOO_DEEP, str(TooDeeplyNested()))
    lines = lines.filter(~deep)
    for start in range(0, lines.height, max(context.decode_slice_rows, 1)):
        part = lines.slice(start, context.decode_slice_rows)
        fast_traces, fast_feedback, fast_skipped, slow_lines = fast_rows(part, context)
        trace_parts.append(fast_traces.select(list(schema)))
        feedback_parts.append(fast_feedback.select(list(FEEDBACK_RAW_SCHEMA)))
        skipped.update(fast_skipped)
        if slow_lines:
            for record, raw in part.filter(pl.col("source_record").is_in(list(slow_lines))).iter_rows():
                map_line(raw, record, rows)
    skipped.update(rows.skipped)
    traces = pl.concat([*trace_parts, rows.trace_frame()], how="vertical_relaxed").sort("source_record", maintain_order=True)
    feedback = pl.concat([*feedback_parts, rows.feedback_frame()], how="vertical_relaxed").sort("source_record", maintain_order=True)
    return finish(traces, feedback, skipped, lines.height + int(oversized.sum()) + int(deep.sum()), context.task_type, context.feedback)
