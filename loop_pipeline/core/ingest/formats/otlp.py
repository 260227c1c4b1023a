"""OTLP/JSON as the OpenTelemetry Collector's file exporter writes it: one export request per line.

``{"resourceSpans": [{"resource": {"attributes": [...]}, "scopeSpans": [{"spans": [...]}]}]}`` with
key/value attribute lists. The mapping is the one of :mod:`otel` (same attribute names, same
rules); this module only makes it fast:

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

import json
from collections import Counter
from typing import Any

import polars as pl

from loop_pipeline.core.ingest.formats import openinference, otel
from loop_pipeline.core.ingest.formats.common import (
    FEEDBACK_RAW_SCHEMA,
    ROLE_ALIASES,
    SKIP_AGENT,
    SKIP_FAILED,
    SKIP_OTHER,
    SKIP_TOOL,
    AdapterContext,
    FormatOutput,
    MappingError,
    Rows,
    compact_json,
    finish,
    json_type,
    trace_schema,
)
from loop_pipeline.core.ingest.formats.mapping import meta_column
from loop_pipeline.core.ingest.lines import read_lines
from loop_pipeline.schemas.traces import MESSAGES_DTYPE

FORMAT = "otlp"

_PRESENT = pl.Struct({"_": pl.Null})  # decodes any object: tells a nested value is there
ANY_VALUE = pl.Struct(
    {
        "stringValue": pl.String,
        "intValue": pl.String,
        "doubleValue": pl.String,
        "boolValue": pl.String,
        "bytesValue": pl.String,
        "arrayValue": _PRESENT,
        "kvlistValue": _PRESENT,
    }
)
KEY_VALUES = pl.List(pl.Struct({"key": pl.String, "value": ANY_VALUE}))
EVENT = pl.Struct({"timeUnixNano": pl.String, "name": pl.String, "attributes": KEY_VALUES})
SPAN = pl.Struct(
    {
        "traceId": pl.String,
        "spanId": pl.String,
        "parentSpanId": pl.String,
        "name": pl.String,
        "startTimeUnixNano": pl.String,
        "endTimeUnixNano": pl.String,
        "attributes": KEY_VALUES,
        "events": pl.List(EVENT),
        "status": pl.Struct({"code": pl.String}),
    }
)
REQUEST = pl.Struct(
    {
        "resourceSpans": pl.List(
            pl.Struct({"resource": pl.Struct({"attributes": KEY_VALUES}), "scopeSpans": pl.List(pl.Struct({"spans": pl.List(SPAN)}))})
        )
    }
)
PART = pl.Struct({"type": pl.String, "content": pl.String, "text": pl.String})
# ``type`` and ``text`` are read only to send such messages to the per-span path.
MESSAGES_JSON = pl.List(
    pl.Struct({"role": pl.String, "parts": pl.List(PART), "content": pl.String, "type": pl.String, "text": pl.String})
)
PARTS_JSON = pl.List(PART)

MESSAGE_KEYS = (otel.INPUT_MESSAGES, otel.OUTPUT_MESSAGES, otel.SYSTEM_INSTRUCTIONS)
# Attributes only the per-span path reads: OpenInference, deprecated content attributes.
_SLOW_KEY = r"^(?:openinference\.|llm\.|input\.value$|output\.value$|gen_ai\.prompt|gen_ai\.completion|annotations\.|evaluations\.)"
_SLOW_EVENTS = sorted(
    {otel.DETAILS_EVENT, "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion", *otel.MESSAGE_EVENTS}
)
_SLOW_MESSAGE = r'"(?:tool_calls|function_call|additional_kwargs|message\.[a-z_]+)"\s*:'
_TEXT_PARTS = ["text", "input_text", "output_text"]
_EVALUATION_KEYS = ("gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label")


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode(raw: pl.Series, dtype: pl.DataType) -> pl.Series:
    return raw.to_frame("raw").select(pl.col("raw").str.json_decode(dtype)).to_series()


def _decode_flagged(raw: pl.Series, dtype: pl.DataType, screen: pl.Expr | None = None) -> tuple[pl.Series, pl.Series]:
    """Decode each value to ``dtype``; values that do not decode come back null and flagged.

    One call for the whole series when it decodes; otherwise an optional vectorized screen sets the
    obviously bad values aside and the rest is halved until each failing value stands alone.
    """
    try:
        return _decode(raw, dtype), pl.Series([False] * len(raw), dtype=pl.Boolean)
    except pl.exceptions.PolarsError:
        pass
    flagged = [False] * len(raw)
    if screen is not None:
        suspect = raw.to_frame("raw").select(screen.fill_null(True)).to_series()
        for index in suspect.arg_true().to_list():
            flagged[index] = True
    keep = pl.Series(flagged, dtype=pl.Boolean).not_()
    patched = raw.to_frame("raw").select(pl.when(keep).then(pl.col("raw"))).to_series()

    def bisect(start: int, stop: int) -> list[pl.Series]:
        part = patched.slice(start, stop - start)
        try:
            return [_decode(part, dtype)]
        except pl.exceptions.PolarsError:
            if stop - start == 1:
                flagged[start] = True
                return [pl.Series([None], dtype=dtype)]
        middle = (start + stop) // 2
        return bisect(start, middle) + bisect(middle, stop)

    decoded = pl.concat(bisect(0, len(raw))) if len(raw) else pl.Series([], dtype=dtype)
    return decoded, pl.Series(flagged, dtype=pl.Boolean)


def _text(value: pl.Expr) -> pl.Expr:
    """An AnyValue struct as the text the per-span path would give a scalar."""
    return pl.coalesce(
        value.struct.field("stringValue"),
        value.struct.field("intValue"),
        value.struct.field("doubleValue"),
        value.struct.field("boolValue"),
        value.struct.field("bytesValue"),
    )


def _nested(value: pl.Expr) -> pl.Expr:
    return value.struct.field("arrayValue").is_not_null() | value.struct.field("kvlistValue").is_not_null()


def _hex(expr: pl.Expr) -> pl.Expr:
    stripped = expr.str.strip_chars().str.replace(r"^0[xX]", "")
    return pl.when(stripped != "").then(stripped)


def _nanos_text(nanos: pl.Expr) -> pl.Expr:
    micros = nanos.cast(pl.Int64, strict=False) // 1000
    return pl.format("{}.{}", micros // 1000, (micros % 1000).cast(pl.String).str.pad_start(3, "0"))


def _is_nanos(expr: pl.Expr) -> pl.Expr:
    return expr.str.contains(r"^\d{17,19}$").fill_null(False)


# ---------------------------------------------------------------------------------------------
# The vectorized path


def _spans(decoded: pl.DataFrame) -> pl.DataFrame:
    """(source_record, decoded request) to one row per span with its resource attributes."""
    return (
        decoded.select("source_record", pl.col("request").struct.field("resourceSpans").alias("rs"))
        .explode("rs")
        .filter(pl.col("rs").is_not_null())
        .select(
            "source_record",
            pl.col("rs").struct.field("resource").struct.field("attributes").alias("resource"),
            pl.col("rs").struct.field("scopeSpans").alias("ss"),
        )
        .explode("ss")
        .filter(pl.col("ss").is_not_null())
        .select("source_record", "resource", pl.col("ss").struct.field("spans").alias("span"))
        .explode("span")
        .filter(pl.col("span").is_not_null())
        .with_row_index("_row")
    )


def _pivot(long: pl.DataFrame, keys: tuple[str, ...], prefix: str) -> pl.DataFrame:
    """Long (``_row``, ``key``, ``text``) rows to one column per key (first value wins)."""
    wanted = long.filter(pl.col("key").is_in(list(keys)))
    columns = [pl.col("text").filter(pl.col("key") == key).first().alias(f"{prefix}{key}") for key in keys]
    return wanted.group_by("_row").agg(columns)


def _messages_column(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """JSON text of ``[{role, parts: [{type: text, content}]}]`` to canonical messages; the rest flagged."""
    screen = ~pl.col("raw").str.strip_chars_start().str.starts_with("[") | pl.col("raw").str.contains(_SLOW_MESSAGE)
    candidates = values.to_frame("raw").select(pl.when(~screen.fill_null(False)).then(pl.col("raw"))).to_series()
    decoded, failed = _decode_flagged(candidates, MESSAGES_JSON)
    frame = pl.DataFrame({"raw": values, "m": decoded, "failed": failed})
    part_ok = pl.element().struct.field("type").is_in(_TEXT_PARTS) | (
        pl.element().struct.field("type").is_null()
        & pl.coalesce(pl.element().struct.field("content"), pl.element().struct.field("text")).is_not_null()
    )
    parts_ok = pl.col("m").list.eval(
        pl.element().struct.field("parts").list.eval(part_ok).list.all().fill_null(True)
        & pl.element().struct.field("type").is_null()
        & pl.element().struct.field("text").is_null()
    ).list.all()
    text_of = pl.coalesce(pl.element().struct.field("content"), pl.element().struct.field("text")).fill_null("")
    role = pl.element().struct.field("role")
    content = (
        pl.when(pl.element().struct.field("parts").is_not_null())
        .then(pl.element().struct.field("parts").list.eval(text_of).list.join("\n"))
        .otherwise(pl.element().struct.field("content"))
    )
    aliased = role.str.strip_chars().str.to_lowercase()
    rendered = pl.col("m").list.eval(
        pl.struct(
            aliased.replace(ROLE_ALIASES).alias("role"),
            content.alias("content"),
        )
    )
    slow = pl.col("raw").is_not_null() & (screen.fill_null(False) | pl.col("failed") | ~parts_ok.fill_null(True))
    out = frame.select(rendered.cast(MESSAGES_DTYPE).alias("messages"), slow.alias("slow"))
    return out.get_column("messages"), out.get_column("slow")


def _system_column(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    screen = ~pl.col("raw").str.strip_chars_start().str.starts_with("[")
    candidates = values.to_frame("raw").select(pl.when(~screen.fill_null(False)).then(pl.col("raw"))).to_series()
    decoded, failed = _decode_flagged(candidates, PARTS_JSON)
    frame = pl.DataFrame({"raw": values, "p": decoded, "failed": failed})
    part_ok = pl.element().struct.field("type").is_in(_TEXT_PARTS) | (
        pl.element().struct.field("type").is_null()
        & pl.coalesce(pl.element().struct.field("content"), pl.element().struct.field("text")).is_not_null()
    )
    text_of = pl.coalesce(pl.element().struct.field("content"), pl.element().struct.field("text")).fill_null("")
    joined = pl.col("p").list.eval(text_of).list.join("\n")
    slow = pl.col("raw").is_not_null() & (screen.fill_null(False) | pl.col("failed") | ~pl.col("p").list.eval(part_ok).list.all().fill_null(True))
    out = frame.select(pl.when(joined != "").then(joined).alias("system"), slow.alias("slow"))
    return out.get_column("system"), out.get_column("slow")


def _fast(lines: pl.DataFrame, context: AdapterContext) -> tuple[pl.DataFrame, pl.DataFrame, Counter, set[int]]:
    """Vectorized rows for the plain spans of ``lines``; the line numbers left for the slow path."""
    screen = pl.col("raw").str.json_path_match("$.resourceSpans").is_null()
    decoded, failed = _decode_flagged(lines.get_column("raw"), REQUEST, screen)
    frame = lines.select("source_record").with_columns(decoded.alias("request"), failed.alias("failed"))
    no_spans = pl.col("request").struct.field("resourceSpans").is_null()
    slow_lines = set(frame.filter(pl.col("failed") | no_spans).get_column("source_record").to_list())
    spans = _spans(frame.filter(~pl.col("failed") & ~no_spans))
    del frame, decoded
    rule_keys = context.task_type.metadata_keys

    span_keys = tuple(dict.fromkeys(otel.SCALAR_KEYS + MESSAGE_KEYS + rule_keys))
    resource_keys = tuple(dict.fromkeys(("service.name",) + rule_keys))
    # One slim long table (row, key, text, flags): the attribute structs are not kept around.
    value = pl.col("a").struct.field("value")
    attrs = (
        spans.select("_row", pl.col("span").struct.field("attributes").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select(
            "_row",
            pl.col("a").struct.field("key").alias("key"),
            _text(value).alias("text"),
            _nested(value).alias("nested"),
            value.struct.field("stringValue").is_not_null().alias("is_string"),
        )
    )
    attr_flags = attrs.group_by("_row").agg(
        (
            pl.col("key").str.contains(_SLOW_KEY)
            | (pl.col("key").is_in(list(otel.SCALAR_KEYS + rule_keys)) & pl.col("nested"))
            | (pl.col("key").is_in(list(MESSAGE_KEYS)) & (pl.col("nested") | (~pl.col("is_string") & pl.col("text").is_not_null())))
        )
        .any()
        .alias("_slow_attr")
    )
    values = _pivot(attrs, span_keys, "a:")
    del attrs
    resource = (
        spans.select("_row", pl.col("resource").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select(
            "_row",
            pl.col("a").struct.field("key").alias("key"),
            _text(pl.col("a").struct.field("value")).alias("text"),
            _nested(pl.col("a").struct.field("value")).alias("nested"),
        )
    )
    resource_values = _pivot(resource, resource_keys, "r:")
    resource_flags = resource.filter(pl.col("key").is_in(list(resource_keys))).group_by("_row").agg(pl.col("nested").any().alias("_slow_resource"))
    del resource

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
    eval_attrs = (
        evaluations.select("_event", pl.col("event_attributes").alias("a"))
        .explode("a")
        .filter(pl.col("a").is_not_null())
        .select("_event", pl.col("a").struct.field("key").alias("key"), pl.col("a").struct.field("value").alias("value"))
        .filter(pl.col("key").is_in(list(_EVALUATION_KEYS)))
    )
    name_key, score_key, label_key = _EVALUATION_KEYS
    eval_values = eval_attrs.group_by("_event").agg(
        pl.col("value").struct.field("stringValue").filter(pl.col("key") == name_key).first().alias("_name"),
        _text(pl.col("value")).filter(pl.col("key") == score_key).first().alias("_raw_value"),
        pl.col("value").struct.field("stringValue").filter(pl.col("key") == label_key).first().alias("_label"),
        (
            ((pl.col("key") == name_key) & pl.col("value").struct.field("stringValue").is_null())
            | (
                (pl.col("key") == score_key)
                & pl.coalesce(pl.col("value").struct.field("intValue"), pl.col("value").struct.field("doubleValue")).is_null()
            )
            | ((pl.col("key") == label_key) & pl.col("value").struct.field("stringValue").is_null())
        )
        .any()
        .alias("_bad"),
    )
    evaluations = evaluations.join(eval_values, on="_event", how="left", maintain_order="left")
    event_flags = pl.concat(
        [
            events.filter(pl.col("event_name").is_in(_SLOW_EVENTS)).select("_row"),
            evaluations.filter(pl.col("_bad").fill_null(False) | pl.col("_name").is_null() | (pl.col("_name") == "")).select("_row"),
        ]
    ).unique().with_columns(pl.lit(True).alias("_slow_event"))
    del events

    no_ids = spans.filter(
        _hex(pl.col("span").struct.field("traceId")).is_null() | _hex(pl.col("span").struct.field("spanId")).is_null()
    ).select("_row", pl.col("span").struct.json_encode().alias("_span_raw"))
    table = (
        spans.select(
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
        .join(values, on="_row", how="left", maintain_order="left")
        .join(resource_values, on="_row", how="left", maintain_order="left")
        .join(attr_flags, on="_row", how="left", maintain_order="left")
        .join(resource_flags, on="_row", how="left", maintain_order="left")
        .join(event_flags, on="_row", how="left", maintain_order="left")
    )
    del spans
    for key in span_keys:
        if f"a:{key}" not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=pl.String).alias(f"a:{key}"))
    for key in resource_keys:
        if f"r:{key}" not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=pl.String).alias(f"r:{key}"))
    input_messages, input_slow = _messages_column(table.get_column(f"a:{otel.INPUT_MESSAGES}"))
    output_messages, output_slow = _messages_column(table.get_column(f"a:{otel.OUTPUT_MESSAGES}"))
    system, system_slow = _system_column(table.get_column(f"a:{otel.SYSTEM_INSTRUCTIONS}"))
    table = table.with_columns(
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
            | (pl.col("_start").is_not_null() & ~_is_nanos(pl.col("_start")))
            | (pl.col("_end").is_not_null() & ~_is_nanos(pl.col("_end")))
        ).alias("_slow"),
    )
    slow_lines |= set(table.filter(pl.col("_slow")).get_column("source_record").unique().to_list())
    if slow_lines:
        table = table.filter(~pl.col("source_record").is_in(list(slow_lines)))
        evaluations = evaluations.filter(~pl.col("source_record").is_in(list(slow_lines)))

    operation = pl.coalesce([pl.col(f"a:{k}") for k in otel.OPERATION_KEYS])
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
        _hex(pl.col("_trace")).alias("_trace"),
        _hex(pl.col("_span")).alias("_span"),
        _hex(pl.col("_parent")).alias("_parent"),
    )
    skipped: Counter = Counter()
    outcome = pl.when(pl.col("_kind") != "llm").then(pl.col("_kind")).when(pl.col("_error")).then(pl.lit(SKIP_FAILED))
    for reason, n in table.select(outcome.alias("r")).group_by("r").len().iter_rows():
        if reason is not None:
            skipped[("trace", reason)] += n
    calls = table.filter((pl.col("_kind") == "llm") & ~pl.col("_error"))

    def first(keys: tuple[str, ...]) -> pl.Expr:
        return pl.coalesce([pl.col(f"a:{k}") for k in keys])

    messages = (
        pl.when(pl.col("_input").is_null() & pl.col("_system").is_null())
        .then(pl.lit(None, dtype=MESSAGES_DTYPE))
        .otherwise(
            pl.concat_list(
                pl.when(pl.col("_system").is_not_null())
                .then(pl.concat_list(pl.struct(pl.lit("system").alias("role"), pl.col("_system").alias("content"))))
                .otherwise(pl.lit([], dtype=MESSAGES_DTYPE)),
                pl.col("_input").fill_null(pl.lit([], dtype=MESSAGES_DTYPE)),
            )
        )
    )
    missing = (
        pl.when(pl.col("_trace").is_null())
        .then(pl.lit("trace id: required (span context)"))
        .when(pl.col("_span").is_null())
        .then(pl.lit("span id: required (span context)"))
    )
    metadata = pl.struct(
        pl.col("_trace").alias("source_trace_id"),
        pl.col("_span").alias("span_id"),
        pl.col("_parent").alias("parent_span_id"),
        pl.col("_name").alias("span_name"),
        operation.alias("operation"),
        first(otel.RESPONSE_ID_KEYS).alias("response_id"),
        first(otel.REQUEST_MODEL_KEYS).alias("request_model"),
    ).struct.json_encode()
    start_ns = pl.col("_start").cast(pl.Int64, strict=False)
    end_ns = pl.col("_end").cast(pl.Int64, strict=False)
    rows = calls.select(
        pl.col("_span").alias("trace_id"),
        pl.when(pl.col("_start").is_not_null()).then(_nanos_text(pl.col("_start"))).alias("timestamp"),
        pl.lit(None, dtype=pl.String).alias("task_type"),
        pl.col("r:service.name").alias("app"),
        first(otel.MODEL_KEYS).alias("model"),
        first(otel.PROVIDER_KEYS).alias("provider"),
        messages.alias("messages"),
        pl.col("_output").list.first().struct.field("content").alias("output"),
        first(otel.INPUT_TOKEN_KEYS).alias("input_tokens"),
        first(otel.OUTPUT_TOKEN_KEYS).alias("output_tokens"),
        first(otel.COST_KEYS).alias("cost_usd"),
        pl.lit(None, dtype=pl.String).alias("cost_source"),
        ((end_ns - start_ns) / 1e6).cast(pl.String).alias("latency_ms"),
        first(otel.USER_KEYS).alias("user_id"),
        first(otel.SESSION_KEYS).alias("session_id"),
        pl.lit(None, dtype=pl.String).alias("prompt_version"),
        metadata.alias("metadata"),
        "source_record",
        pl.lit(None, dtype=pl.String).alias("raw"),
        pl.when(missing.is_not_null()).then(pl.lit("missing_field")).alias("_reason"),
        missing.alias("_detail"),
        pl.col("_trace").alias("_scope"),
        pl.col("_name").alias("_span_name"),
        pl.lit(None, dtype=pl.String).alias("_trace_name"),
        pl.lit(None, dtype=pl.String).alias("_prompt_name"),
        pl.lit([], dtype=pl.List(pl.String)).alias("_tags"),
        *[pl.coalesce(pl.col(f"a:{key}"), pl.col(f"r:{key}")).alias(meta_column(key)) for key in rule_keys],
        pl.col("_row"),
    )
    if no_ids.height:
        rows = rows.join(no_ids, on="_row", how="left", maintain_order="left").with_columns(
            pl.coalesce("raw", "_span_raw").alias("raw")
        ).drop("_span_raw")
    rows = rows.drop("_row")

    feedback = evaluations.join(
        table.select("_row", "_kind", "_span", "_trace", "_end"), on="_row", how="inner"
    ).select(
        pl.lit(None, dtype=pl.String).alias("feedback_id"),
        pl.when(pl.col("_kind") == "llm").then(pl.col("_span")).alias("trace_id"),
        pl.when(pl.col("event_time").is_not_null())
        .then(pl.when(_is_nanos(pl.col("event_time"))).then(_nanos_text(pl.col("event_time"))).otherwise(pl.col("event_time")))
        .otherwise(pl.when(_is_nanos(pl.col("_end"))).then(_nanos_text(pl.col("_end"))).otherwise(pl.col("_end")))
        .alias("timestamp"),
        pl.lit(None, dtype=pl.String).alias("edited_output"),
        pl.lit(otel.EVALUATION_SOURCE).alias("source"),
        pl.lit(None, dtype=pl.String).alias("annotator_id"),
        "_name",
        pl.when(pl.col("_raw_value").is_not_null()).then(pl.lit("number")).alias("_value_type"),
        "_raw_value",
        "_label",
        pl.lit(None, dtype=pl.String).alias("_kind_hint"),
        pl.col("_trace").alias("_scope"),
        pl.lit("trace").alias("_scope_kind"),
        "source_record",
        pl.col("event").struct.json_encode().alias("raw"),
        pl.lit(None, dtype=pl.String).alias("_reason"),
        pl.lit(None, dtype=pl.String).alias("_detail"),
    )
    return rows, feedback, skipped, slow_lines


# ---------------------------------------------------------------------------------------------
# The per-span path


def map_line(line: str, record: int, rows: Rows) -> None:
    """One export request, span by span, through :func:`otel.map_span`."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        message = getattr(exc, "msg", str(exc))
        rows.bad("trace", record, line, "malformed_json", f"{message} at character {getattr(exc, 'pos', '?')}")
        return
    try:
        if not isinstance(request, dict):
            raise MappingError("malformed_json", f"expected an export request object, got {json_type(request)}")
        resource_spans = request.get("resourceSpans")
        if resource_spans is None:
            raise MappingError("missing_field", "resourceSpans: required (not an OTLP/JSON trace export request)")
        if not isinstance(resource_spans, list):
            raise MappingError("wrong_type", f"resourceSpans: expected an array, got {json_type(resource_spans)}")
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for r, resource_span in enumerate(resource_spans):
            if not isinstance(resource_span, dict):
                raise MappingError("wrong_type", f"resourceSpans[{r}]: expected an object, got {json_type(resource_span)}")
            resource = resource_span.get("resource") or {}
            resource_attributes = otel.key_values(resource.get("attributes") or [], "resource.attributes") if isinstance(resource, dict) else {}
            scope_spans = resource_span.get("scopeSpans") or []
            if not isinstance(scope_spans, list):
                raise MappingError("wrong_type", f"resourceSpans[{r}].scopeSpans: expected an array, got {json_type(scope_spans)}")
            for s, scope_span in enumerate(scope_spans):
                spans = scope_span.get("spans") if isinstance(scope_span, dict) else None
                if not isinstance(spans, list):
                    raise MappingError("wrong_type", f"resourceSpans[{r}].scopeSpans[{s}].spans: expected an array, got {json_type(spans)}")
                found.extend((span, resource_attributes) for span in spans)
    except MappingError as exc:
        rows.bad("trace", record, line, exc.reason, exc.detail)
        return
    for span_record, resource_attributes in found:
        raw = compact_json(span_record)
        try:
            span = otel.span_from_record(span_record)
        except MappingError as exc:
            rows.bad("trace", record, raw, exc.reason, exc.detail)
            continue
        span.resource = resource_attributes
        if "openinference.span.kind" in span.attributes:  # Phoenix / OpenInference over OTLP
            openinference.map_span(span, rows, record, raw)
        else:
            otel.map_span(span, rows, record, raw)


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
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
    for start in range(0, lines.height, max(context.decode_slice_rows, 1)):
        part = lines.slice(start, context.decode_slice_rows)
        fast_rows, fast_feedback, fast_skipped, slow_lines = _fast(part, context)
        trace_parts.append(fast_rows.select(list(schema)))
        feedback_parts.append(fast_feedback.select(list(FEEDBACK_RAW_SCHEMA)))
        skipped.update(fast_skipped)
        if slow_lines:
            for record, raw in part.filter(pl.col("source_record").is_in(list(slow_lines))).iter_rows():
                map_line(raw, record, rows)
    skipped.update(rows.skipped)
    traces = pl.concat([*trace_parts, rows.trace_frame()], how="vertical_relaxed").sort("source_record", maintain_order=True)
    feedback = pl.concat([*feedback_parts, rows.feedback_frame()], how="vertical_relaxed").sort("source_record", maintain_order=True)
    return finish(traces, feedback, skipped, lines.height + int(oversized.sum()), context.task_type, context.feedback)
