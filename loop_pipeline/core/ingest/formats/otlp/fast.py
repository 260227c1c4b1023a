"""The vectorized path: plain ``gen_ai.*`` spans of a slice of export requests mapped with polars
expressions; every line holding a span outside that subset is handed back to the per-span path.

Each step works on a slim table keyed by ``_row`` (one span), so the decoded attribute structs are
not kept around longer than the step that reads them.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from loop_pipeline.core.ingest.formats import otel
from loop_pipeline.core.ingest.formats.mapping import meta_column
from loop_pipeline.core.ingest.formats.otlp.decoding import (
    REQUEST,
    any_value_text,
    decode_flagged,
    hex_expr,
    is_nanos,
    is_nested,
    nanos_text_expr,
)
from loop_pipeline.core.ingest.formats.otlp.tables import messages_column, pivot, spans_of, system_column
from loop_pipeline.core.ingest.formats.rows import SKIP_AGENT, SKIP_FAILED, SKIP_OTHER, SKIP_TOOL, AdapterContext
from loop_pipeline.schemas.traces import MESSAGES_DTYPE

MESSAGE_KEYS = (otel.INPUT_MESSAGES, otel.OUTPUT_MESSAGES, otel.SYSTEM_INSTRUCTIONS)
# Attributes only the per-span path reads: OpenInference, deprecated content attributes.
_SLOW_KEY = r"^(?:openinference\.|llm\.|input\.value$|output\.value$|gen_ai\.prompt|gen_ai\.completion|annotations\.|evaluations\.)"
_SLOW_EVENTS = sorted(
    {otel.DETAILS_EVENT, "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion", *otel.MESSAGE_EVENTS}
)
_EVALUATION_KEYS = ("gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label")


def fast_rows(lines: pl.DataFrame, context: AdapterContext) -> tuple[pl.DataFrame, pl.DataFrame, Counter, set[int]]:
    """Vectorized rows for the plain spans of ``lines``; the line numbers left for the slow path."""
    spans, slow_lines = _decode_requests(lines)
    rule_keys = context.task_type.metadata_keys
    span_keys = tuple(dict.fromkeys(otel.SCALAR_KEYS + MESSAGE_KEYS + rule_keys))
    resource_keys = tuple(dict.fromkeys(("service.name",) + rule_keys))
    values, attr_flags = _span_attributes(spans, span_keys, rule_keys)
    resource_values, resource_flags = _resource_attributes(spans, resource_keys)
    evaluations, event_flags = _events(spans)
    no_ids = spans.filter(
        hex_expr(pl.col("span").struct.field("traceId")).is_null() | hex_expr(pl.col("span").struct.field("spanId")).is_null()
    ).select("_row", pl.col("span").struct.json_encode().alias("_span_raw"))
    table = (
        _span_fields(spans)
        .join(values, on="_row", how="left", maintain_order="left")
        .join(resource_values, on="_row", how="left", maintain_order="left")
        .join(attr_flags, on="_row", how="left", maintain_order="left")
        .join(resource_flags, on="_row", how="left", maintain_order="left")
        .join(event_flags, on="_row", how="left", maintain_order="left")
    )
    del spans, values, resource_values
    table = _with_messages_and_slow_flag(table, span_keys, resource_keys)
    slow_lines |= set(table.filter(pl.col("_slow")).get_column("source_record").unique().to_list())
    if slow_lines:
        table = table.filter(~pl.col("source_record").is_in(list(slow_lines)))
        evaluations = evaluations.filter(~pl.col("source_record").is_in(list(slow_lines)))
    table, skipped = _classify(table)
    calls = table.filter((pl.col("_kind") == "llm") & ~pl.col("_error"))
    rows = _trace_rows(calls, rule_keys, no_ids)
    feedback = _evaluation_feedback(evaluations, table)
    return rows, feedback, skipped, slow_lines


def _decode_requests(lines: pl.DataFrame) -> tuple[pl.DataFrame, set[int]]:
    """One row per span of the lines that decode; the lines that do not (or hold no spans)."""
    screen = pl.col("raw").str.json_path_match("$.resourceSpans").is_null()
    decoded, failed = decode_flagged(lines.get_column("raw"), REQUEST, screen)
    frame = lines.select("source_record").with_columns(decoded.alias("request"), failed.alias("failed"))
    no_spans = pl.col("request").struct.field("resourceSpans").is_null()
    slow_lines = set(frame.filter(pl.col("failed") | no_spans).get_column("source_record").to_list())
    return spans_of(frame.filter(~pl.col("failed") & ~no_spans)), slow_lines


def _span_attributes(
    spans: pl.DataFrame, span_keys: tuple[str, ...], rule_keys: tuple[str, ...]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The span attributes as ``a:<key>`` columns, and ``_slow_attr``: a span needs the slow path."""
    # One slim long table (row, key, text, flags): the attribute structs are not kept around.
    value = pl.col("a").struct.field("value")
    attrs = (
        spans.select("_row", pl.col("span").struct.field("attributes").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select(
            "_row",
            pl.col("a").struct.field("key").alias("key"),
            any_value_text(value).alias("text"),
            is_nested(value).alias("nested"),
            value.struct.field("stringValue").is_not_null().alias("is_string"),
        )
    )
    message_not_text = pl.col("nested") | (~pl.col("is_string") & pl.col("text").is_not_null())
    attr_flags = attrs.group_by("_row").agg(
        (
            pl.col("key").str.contains(_SLOW_KEY)
            | (pl.col("key").is_in(list(otel.SCALAR_KEYS + rule_keys)) & pl.col("nested"))
            | (pl.col("key").is_in(list(MESSAGE_KEYS)) & message_not_text)
        )
        .any()
        .alias("_slow_attr")
    )
    return pivot(attrs, span_keys, "a:"), attr_flags


def _resource_attributes(spans: pl.DataFrame, resource_keys: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The resource attributes as ``r:<key>`` columns, and ``_slow_resource`` (a nested value)."""
    resource = (
        spans.select("_row", pl.col("resource").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select(
            "_row",
            pl.col("a").struct.field("key").alias("key"),
            any_value_text(pl.col("a").struct.field("value")).alias("text"),
            is_nested(pl.col("a").struct.field("value")).alias("nested"),
        )
    )
    flags = (
        resource.filter(pl.col("key").is_in(list(resource_keys)))
        .group_by("_row")
        .agg(pl.col("nested").any().alias("_slow_resource"))
    )
    return pivot(resource, resource_keys, "r:"), flags


def _events(spans: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Evaluation events with their name, score and label; ``_slow_event`` for spans whose events
    only the per-span path reads (message events, malformed evaluations)."""
    events = (
        spans.select("_row", "source_record", pl.col("span").struct.field("events").alias("e"))
        .explode("e")
        .filter(pl.col("e").is_not_null())
        .select(
            "_row",
            "source_record",
            pl.col("e").struct.field("name").alias("event_name"),
            pl.col("e").struct.field("timeUnixNano").alias("event_time"),
            pl.col("e").struct.field("attributes").alias("event_attributes"),
            pl.col("e").alias("event"),
        )
        .with_row_index("_event")
    )
    evaluations = events.filter(pl.col("event_name") == otel.EVALUATION_EVENT)
    evaluations = evaluations.join(_evaluation_values(evaluations), on="_event", how="left", maintain_order="left")
    malformed = pl.col("_bad").fill_null(False) | pl.col("_name").is_null() | (pl.col("_name") == "")
    event_flags = (
        pl.concat(
            [
                events.filter(pl.col("event_name").is_in(_SLOW_EVENTS)).select("_row"),
                evaluations.filter(malformed).select("_row"),
            ]
        )
        .unique()
        .with_columns(pl.lit(True).alias("_slow_event"))
    )
    return evaluations, event_flags


def _evaluation_values(evaluations: pl.DataFrame) -> pl.DataFrame:
    """Per evaluation event: ``_name``, ``_raw_value`` (the score), ``_label``, ``_bad`` (a value
    of the wrong type)."""
    eval_attrs = (
        evaluations.select("_event", pl.col("event_attributes").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select("_event", pl.col("a").struct.field("key").alias("key"), pl.col("a").struct.field("value").alias("value"))
        .filter(pl.col("key").is_in(list(_EVALUATION_KEYS)))
    )
    name_key, score_key, label_key = _EVALUATION_KEYS
    string = pl.col("value").struct.field("stringValue")
    number = pl.coalesce(pl.col("value").struct.field("intValue"), pl.col("value").struct.field("doubleValue"))
    return eval_attrs.group_by("_event").agg(
        string.filter(pl.col("key") == name_key).first().alias("_name"),
        any_value_text(pl.col("value")).filter(pl.col("key") == score_key).first().alias("_raw_value"),
        string.filter(pl.col("key") == label_key).first().alias("_label"),
        (
            ((pl.col("key") == name_key) & string.is_null())
            | ((pl.col("key") == score_key) & number.is_null())
            | ((pl.col("key") == label_key) & string.is_null())
        )
        .any()
        .alias("_bad"),
    )


def _span_fields(spans: pl.DataFrame) -> pl.DataFrame:
    return spans.select(
        "_row",
        "source_record",
        pl.col("span").struct.field("traceId").alias("_trace"),
        pl.col("span").struct.field("spanId").alias("_span"),
        pl.col("span").struct.field("parentSpanId").alias("_parent"),
        pl.col("span").struct.field("name").alias("_name"),
        pl.col("span").struct.field("startTimeUnixNano").alias("_start"),
        pl.col("span").struct.field("endTimeUnixNano").alias("_end"),
        pl.col("span").struct.field("status").struct.field("code").alias("_status"),
    )


def _with_messages_and_slow_flag(table: pl.DataFrame, span_keys: tuple[str, ...], resource_keys: tuple[str, ...]) -> pl.DataFrame:
    """Rendered ``_input`` / ``_output`` / ``_system`` and ``_slow``: any reason the span must
    take the per-span path."""
    for key in span_keys:
        if f"a:{key}" not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=pl.String).alias(f"a:{key}"))
    for key in resource_keys:
        if f"r:{key}" not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=pl.String).alias(f"r:{key}"))
    input_messages, input_slow = messages_column(table.get_column(f"a:{otel.INPUT_MESSAGES}"))
    output_messages, output_slow = messages_column(table.get_column(f"a:{otel.OUTPUT_MESSAGES}"))
    system, system_slow = system_column(table.get_column(f"a:{otel.SYSTEM_INSTRUCTIONS}"))
    return table.with_columns(
        input_messages.alias("_input"),
        output_messages.alias("_output"),
        system.alias("_system"),
        (
            pl.col("_slow_attr").fill_null(False)
            | pl.col("_slow_resource").fill_null(False)
            | pl.col("_slow_event").fill_null(False)
            | input_slow
            | output_slow
            | system_slow
            | (pl.col("_start").is_not_null() & ~is_nanos(pl.col("_start")))
            | (pl.col("_end").is_not_null() & ~is_nanos(pl.col("_end")))
        ).alias("_slow"),
    )


def _first(keys: tuple[str, ...]) -> pl.Expr:
    return pl.coalesce([pl.col(f"a:{k}") for k in keys])


def _classify(table: pl.DataFrame) -> tuple[pl.DataFrame, Counter]:
    """``_kind`` (llm or a skip reason), ``_error``, ids as hex; the skipped spans counted."""
    operation = _first(otel.OPERATION_KEYS)
    lowered = operation.str.strip_chars().str.to_lowercase()
    has_model = pl.any_horizontal([pl.col(f"a:{k}").is_not_null() for k in otel.MODEL_KEYS])
    kind = (
        pl.when(operation.is_not_null() & (operation != ""))
        .then(
            pl.when(lowered.is_in(list(otel.LLM_OPERATIONS)))
            .then(pl.lit("llm"))
            .when(lowered.is_in(list(otel.TOOL_OPERATIONS)))
            .then(pl.lit(SKIP_TOOL))
            .when(lowered.is_in(list(otel.AGENT_OPERATIONS)))
            .then(pl.lit(SKIP_AGENT))
            .otherwise(pl.lit(SKIP_OTHER))
        )
        .when(has_model)
        .then(pl.lit("llm"))
        .otherwise(pl.lit(SKIP_OTHER))
    )
    error = pl.col("_status").str.to_uppercase().is_in(["2", "STATUS_CODE_ERROR", "ERROR"]).fill_null(False)
    table = table.with_columns(
        kind.alias("_kind"),
        error.alias("_error"),
        hex_expr(pl.col("_trace")).alias("_trace"),
        hex_expr(pl.col("_span")).alias("_span"),
        hex_expr(pl.col("_parent")).alias("_parent"),
    )
    skipped: Counter = Counter()
    outcome = pl.when(pl.col("_kind") != "llm").then(pl.col("_kind")).when(pl.col("_error")).then(pl.lit(SKIP_FAILED))
    for reason, n in table.select(outcome.alias("r")).group_by("r").len().iter_rows():
        if reason is not None:
            skipped[("trace", reason)] += n
    return table, skipped


def _messages() -> pl.Expr:
    """The system instructions (as a system message) followed by the input messages."""
    system = (
        pl.when(pl.col("_system").is_not_null())
        .then(pl.concat_list(pl.struct(pl.lit("system").alias("role"), pl.col("_system").alias("content"))))
        .otherwise(pl.lit([], dtype=MESSAGES_DTYPE))
    )
    return (
        pl.when(pl.col("_input").is_null() & pl.col("_system").is_null())
        .then(pl.lit(None, dtype=MESSAGES_DTYPE))
        .otherwise(pl.concat_list(system, pl.col("_input").fill_null(pl.lit([], dtype=MESSAGES_DTYPE))))
    )


def _trace_rows(calls: pl.DataFrame, rule_keys: tuple[str, ...], no_ids: pl.DataFrame) -> pl.DataFrame:
    """Text-typed candidate rows (``rows.trace_schema``) for the LLM calls; a call without ids is
    ``missing_field`` with its span as the raw record."""
    missing = (
        pl.when(pl.col("_trace").is_null())
        .then(pl.lit("trace id: required (span context)"))
        .when(pl.col("_span").is_null())
        .then(pl.lit("span id: required (span context)"))
    )
    # The same object, key for key, as otel.metadata_for writes on the per-span path.
    metadata = pl.struct(
        pl.col("_trace").alias("source_trace_id"),
        pl.col("_span").alias("span_id"),
        pl.col("_parent").alias("parent_span_id"),
        pl.col("_name").alias("span_name"),
        _first(otel.OPERATION_KEYS).alias("operation"),
        _first(otel.RESPONSE_ID_KEYS).alias("response_id"),
        _first(otel.REQUEST_MODEL_KEYS).alias("request_model"),
    ).struct.json_encode()
    start_ns = pl.col("_start").cast(pl.Int64, strict=False)
    end_ns = pl.col("_end").cast(pl.Int64, strict=False)
    no_text = pl.lit(None, dtype=pl.String)
    rows = calls.select(
        pl.col("_span").alias("trace_id"),
        pl.when(pl.col("_start").is_not_null()).then(nanos_text_expr(pl.col("_start"))).alias("timestamp"),
        no_text.alias("task_type"),
        pl.col("r:service.name").alias("app"),
        _first(otel.MODEL_KEYS).alias("model"),
        _first(otel.PROVIDER_KEYS).alias("provider"),
        _messages().alias("messages"),
        pl.col("_output").list.first().struct.field("content").alias("output"),
        _first(otel.INPUT_TOKEN_KEYS).alias("input_tokens"),
        _first(otel.OUTPUT_TOKEN_KEYS).alias("output_tokens"),
        _first(otel.COST_KEYS).alias("cost_usd"),
        no_text.alias("cost_source"),
        ((end_ns - start_ns) / 1e6).cast(pl.String).alias("latency_ms"),
        _first(otel.USER_KEYS).alias("user_id"),
        _first(otel.SESSION_KEYS).alias("session_id"),
        no_text.alias("prompt_version"),
        metadata.alias("metadata"),
        "source_record",
        no_text.alias("raw"),
        pl.when(missing.is_not_null()).then(pl.lit("missing_field")).alias("_reason"),
        missing.alias("_detail"),
        pl.col("_trace").alias("_scope"),
        pl.col("_name").alias("_span_name"),
        no_text.alias("_trace_name"),
        no_text.alias("_prompt_name"),
        pl.lit([], dtype=pl.List(pl.String)).alias("_tags"),
        *[pl.coalesce(pl.col(f"a:{key}"), pl.col(f"r:{key}")).alias(meta_column(key)) for key in rule_keys],
        pl.col("_row"),
    )
    if no_ids.height:
        rows = rows.join(no_ids, on="_row", how="left", maintain_order="left").with_columns(
            pl.coalesce("raw", "_span_raw").alias("raw")
        ).drop("_span_raw")
    return rows.drop("_row")


def _as_time_text(expr: pl.Expr) -> pl.Expr:
    return pl.when(is_nanos(expr)).then(nanos_text_expr(expr)).otherwise(expr)


def _evaluation_feedback(evaluations: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """Raw feedback rows (``rows.FEEDBACK_RAW_SCHEMA``) for the evaluation events of the spans
    kept here: about the span when it is an LLM call, else about its OTel trace."""
    no_text = pl.lit(None, dtype=pl.String)
    return evaluations.join(table.select("_row", "_kind", "_span", "_trace", "_end"), on="_row", how="inner").select(
        no_text.alias("feedback_id"),
        pl.when(pl.col("_kind") == "llm").then(pl.col("_span")).alias("trace_id"),
        pl.when(pl.col("event_time").is_not_null())
        .then(_as_time_text(pl.col("event_time")))
        .otherwise(_as_time_text(pl.col("_end")))
        .alias("timestamp"),
        no_text.alias("edited_output"),
        pl.lit(otel.EVALUATION_SOURCE).alias("source"),
        no_text.alias("annotator_id"),
        "_name",
        pl.when(pl.col("_raw_value").is_not_null()).then(pl.lit("number")).alias("_value_type"),
        "_raw_value",
        "_label",
        no_text.alias("_kind_hint"),
        pl.col("_trace").alias("_scope"),
        pl.lit("trace").alias("_scope_kind"),
        "source_record",
        pl.col("event").struct.json_encode().alias("raw"),
        no_text.alias("_reason"),
        no_text.alias("_detail"),
    )
