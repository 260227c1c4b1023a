"""The native format: JSONL or Parquet records whose keys are the canonical trace / feedback names.

Each record is decoded with every scalar as text, then typed and checked with vectorized polars
expressions; a record that fails gets the first failing check's reason and a detail naming the
field. Nothing here drops a row: the caller splits valid rows from quarantined ones.
"""

from __future__ import annotations

import polars as pl

from loop_pipeline.core.ingest.lines import FieldSpec, decode_records, too_deep
from loop_pipeline.core.ingest.safejson import MAX_DEPTH, TOO_DEEP
from loop_pipeline.schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES
from loop_pipeline.schemas.traces import COST_SOURCES, MESSAGE_ROLES, MESSAGES_DTYPE

SCALAR = FieldSpec("scalar")
MESSAGES = FieldSpec("messages")

TRACE_FIELDS: dict[str, FieldSpec] = {
    "trace_id": SCALAR,
    "timestamp": SCALAR,
    "task_type": SCALAR,
    "app": SCALAR,
    "model": SCALAR,
    "provider": SCALAR,
    "messages": MESSAGES,
    "output": SCALAR,
    "input_tokens": SCALAR,
    "output_tokens": SCALAR,
    "cost_usd": SCALAR,
    "cost_source": SCALAR,
    "latency_ms": SCALAR,
    "user_id": SCALAR,
    "session_id": SCALAR,
    "prompt_version": SCALAR,
}
FEEDBACK_FIELDS: dict[str, FieldSpec] = {
    "feedback_id": SCALAR,
    "trace_id": SCALAR,
    "timestamp": SCALAR,
    "kind": SCALAR,
    "value": SCALAR,
    "label": SCALAR,
    "edited_output": SCALAR,
    "source": SCALAR,
    "annotator_id": SCALAR,
}
# ``metadata`` is free-form JSON: read separately as text (see _with_metadata).
TRACE_KEYS = frozenset(TRACE_FIELDS) | {"metadata"}
FEEDBACK_KEYS = frozenset(FEEDBACK_FIELDS)

UTC_DATETIME = pl.Datetime("us", "UTC")
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def struct_dtype(fields: dict[str, FieldSpec]) -> pl.Struct:
    return pl.Struct({name: MESSAGES_DTYPE if spec is MESSAGES else pl.String for name, spec in fields.items()})


def decode_lines(lines: pl.DataFrame, record_kind: str, max_record_bytes: int, slice_rows: int) -> pl.DataFrame:
    """Lines (``source_record``, ``raw``) to text-typed fields plus ``_reason`` / ``_detail``."""
    fields = TRACE_FIELDS if record_kind == "trace" else FEEDBACK_FIELDS
    # A line the reader cut short (far over the limit) carries its real size in ``_bytes``.
    sizes = lines.get_column("_bytes") if "_bytes" in lines.columns else lines.get_column("raw").str.len_bytes()
    oversized = sizes > max_record_bytes
    deep = too_deep(lines.get_column("raw")) & ~oversized
    skipped = oversized | deep
    # Oversized and too deeply nested lines are not parsed at all: blank them before decoding.
    raw_for_decode = lines.select(pl.when(~skipped).then(pl.col("raw")).otherwise(pl.lit("{}"))).to_series()
    decoded, reason, detail = decode_records(raw_for_decode, struct_dtype(fields), fields, slice_rows)
    frame = pl.DataFrame([lines.get_column("source_record"), lines.get_column("raw"), decoded, reason, detail])
    frame = frame.with_columns(
        pl.when(oversized)
        .then(pl.lit("oversized_record"))
        .when(deep)
        .then(pl.lit(TOO_DEEP))
        .otherwise(pl.col("reason"))
        .alias("_reason"),
        pl.when(oversized)
        .then(pl.format("record is {} bytes, over the {} byte limit", sizes, pl.lit(max_record_bytes)))
        .when(deep)
        .then(pl.lit(f"JSON nests arrays / objects more than {MAX_DEPTH} levels deep"))
        .otherwise(pl.col("detail"))
        .alias("_detail"),
    ).drop("reason", "detail")
    frame = frame.unnest("decoded")
    if record_kind == "trace":
        metadata = pl.when(~skipped).then(pl.col("raw").str.json_path_match("$.metadata"))
        frame = frame.with_columns(metadata.alias("metadata"))
    return frame


def frame_from_table(table: pl.DataFrame, record_kind: str) -> pl.DataFrame:
    """A Parquet table to the same text-typed shape as :func:`decode_lines` gives."""
    fields = TRACE_FIELDS if record_kind == "trace" else FEEDBACK_FIELDS
    columns: list[pl.Expr] = [
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_record"),
        _row_as_json(table).alias("raw"),
    ]
    wrong_shape: list[pl.Expr] = []
    for name, spec in fields.items():
        if name not in table.columns:
            columns.append(pl.lit(None, dtype=MESSAGES_DTYPE if spec is MESSAGES else pl.String).alias(name))
            continue
        dtype = table.schema[name]
        if spec is MESSAGES:
            if dtype == MESSAGES_DTYPE or _castable_messages(dtype):
                columns.append(pl.col(name).cast(MESSAGES_DTYPE).alias(name))
            else:
                columns.append(pl.lit(None, dtype=MESSAGES_DTYPE).alias(name))
                wrong_shape.append(pl.when(pl.col(name).is_not_null()).then(pl.lit(f"{name}: column of type {dtype}")))
        else:
            columns.append(_as_text(pl.col(name), dtype).alias(name))
            if dtype.is_nested():
                wrong_shape.append(pl.when(pl.col(name).is_not_null()).then(pl.lit(f"{name}: column of type {dtype}")))
    if record_kind == "trace":
        columns.append(_metadata_from_column(table).alias("metadata"))
    detail = pl.coalesce(wrong_shape) if wrong_shape else pl.lit(None, dtype=pl.String)
    frame = table.select(columns + [detail.alias("_detail")])
    return frame.with_columns(
        pl.when(pl.col("_detail").is_not_null()).then(pl.lit("wrong_type")).alias("_reason")
    ).select("source_record", "raw", *fields, *(["metadata"] if record_kind == "trace" else []), "_reason", "_detail")


def _castable_messages(dtype: pl.DataType) -> bool:
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return False
    names = {field.name for field in dtype.inner.fields}
    return {"role", "content"} <= names


def _as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return expr
    if dtype == pl.Boolean:
        return pl.when(expr).then(pl.lit("true")).when(~expr).then(pl.lit("false"))
    if isinstance(dtype, pl.Datetime):
        zoned = expr if dtype.time_zone else expr.dt.replace_time_zone("UTC")
        return zoned.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00")
    if dtype.is_nested():
        return pl.lit(None, dtype=pl.String)
    return expr.cast(pl.String)


def _metadata_from_column(table: pl.DataFrame) -> pl.Expr:
    if "metadata" not in table.columns:
        return pl.lit(None, dtype=pl.String)
    dtype = table.schema["metadata"]
    if isinstance(dtype, pl.Struct):
        return pl.col("metadata").struct.json_encode()
    if dtype == pl.String:
        return pl.col("metadata")
    # Anything else cannot be a JSON object; keep its text so the check names it.
    return pl.col("metadata").cast(pl.String, strict=False)


def _row_as_json(table: pl.DataFrame) -> pl.Expr:
    return pl.struct(pl.all()).struct.json_encode()


# ---------------------------------------------------------------------------------------------
# Typing and checks


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO-8601 (``Z``, offsets, naive = UTC, date only) or epoch seconds / milliseconds, to UTC."""
    stripped = text.str.strip_chars()
    is_epoch = stripped.str.contains(r"^-?\d+(\.\d+)?$")
    epoch = stripped.cast(pl.Float64, strict=False)
    # Past 1e11 a number is milliseconds (1e11 seconds is the year 5138).
    epoch_us = pl.when(epoch.abs() >= 1e11).then(epoch * 1e3).otherwise(epoch * 1e6)
    from_epoch = epoch_us.round(0).cast(pl.Int64, strict=False).cast(UTC_DATETIME)
    iso = (
        stripped.str.replace(r"^(\d{4}-\d{2}-\d{2})$", "${1}T00:00:00")
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
        .str.replace(r"(?i)z$", "+00:00")
        .str.replace(r"([+-]\d{2})(\d{2})$", "${1}:${2}")
        .str.replace(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)$", "${1}+00:00")
    )
    from_iso = iso.str.to_datetime(_ISO_FORMAT, strict=False, time_zone="UTC", time_unit="us")
    return pl.when(is_epoch).then(from_epoch).otherwise(from_iso)


def _number(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64, strict=False)


def _not_a_number(name: str, integer: bool) -> pl.Expr:
    value = _number(name)
    bad = value.is_null() | value.is_nan() | value.is_infinite()
    if integer:
        bad = bad | (value != value.round(0))
    return pl.col(name).is_not_null() & bad


def _blank(name: str) -> pl.Expr:
    return pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "")


def _checks_then_reason(frame: pl.DataFrame, checks: list[tuple[str, pl.Expr, pl.Expr]]) -> pl.DataFrame:
    """Keep a reason set while decoding; otherwise the first failing check names the record."""
    already = pl.col("_reason").is_not_null()
    reason = pl.when(already).then(pl.col("_reason"))
    detail = pl.when(already).then(pl.col("_detail"))
    for name, condition, message in checks:
        reason = reason.when(condition).then(pl.lit(name))
        detail = detail.when(condition).then(message)
    return frame.with_columns(
        reason.otherwise(pl.lit(None, dtype=pl.String)).alias("_reason"),
        detail.otherwise(pl.lit(None, dtype=pl.String)).alias("_detail"),
    )


def type_traces(frame: pl.DataFrame) -> pl.DataFrame:
    """Text-typed trace fields to canonical types, with ``_reason`` set on the first failed check."""
    roles = list(MESSAGE_ROLES)
    frame = frame.with_columns(parse_timestamp(pl.col("timestamp")).alias("_timestamp"))
    message_role = pl.col("messages").list.eval(pl.element().struct.field("role"))
    message_content = pl.col("messages").list.eval(pl.element().struct.field("content"))
    metadata_is_object = (
        pl.col("metadata").str.json_path_match("$").str.starts_with("{").fill_null(False)
    )
    checks: list[tuple[str, pl.Expr, pl.Expr]] = []
    for name in ("input_tokens", "output_tokens"):
        checks.append(("wrong_type", _not_a_number(name, integer=True), pl.format(f"{name}: {{}} is not a whole number", pl.col(name))))
    for name in ("cost_usd", "latency_ms"):
        checks.append(("wrong_type", _not_a_number(name, integer=False), pl.format(f"{name}: {{}} is not a number", pl.col(name))))
    checks.append(
        (
            "wrong_type",
            pl.col("metadata").is_not_null() & ~metadata_is_object,
            pl.format("metadata: expected a JSON object, got {}", pl.col("metadata").str.slice(0, 80)),
        )
    )
    for name in ("trace_id", "timestamp", "model"):
        checks.append(("missing_field", _blank(name), pl.lit(f"{name}: required")))
    checks.append(("missing_field", pl.col("messages").is_null() | (pl.col("messages").list.len() == 0), pl.lit("messages: required, at least one message")))
    checks.append(("missing_field", message_role.list.eval(pl.element().is_null()).list.any(), pl.lit("messages: every message needs a role")))
    checks.append(("missing_field", message_content.list.eval(pl.element().is_null()).list.any(), pl.lit("messages: every message needs a content")))
    checks.append(("missing_field", pl.col("output").is_null(), pl.lit("output: required")))
    checks.append(("unparsable_timestamp", pl.col("_timestamp").is_null(), pl.format("timestamp: cannot parse {}", pl.col("timestamp").str.slice(0, 80))))
    for name in ("input_tokens", "output_tokens", "cost_usd", "latency_ms"):
        checks.append(("negative_value", _number(name) < 0, pl.format(f"{name}: {{}} is negative", pl.col(name))))
    for name in ("input_tokens", "output_tokens"):
        # A whole number past 64 bits would otherwise become a silent null count when typed.
        checks.append(("invalid_value", _number(name) >= 2.0**63, pl.format(f"{name}: {{}} is out of range", pl.col(name))))
    checks.append(
        (
            "invalid_value",
            ~message_role.list.eval(pl.element().is_in(roles)).list.all(),
            pl.lit(f"messages: role must be one of {', '.join(roles)}"),
        )
    )
    checks.append(
        (
            "invalid_value",
            pl.col("cost_source").is_not_null() & ~pl.col("cost_source").is_in(list(COST_SOURCES)),
            pl.format("cost_source: {} is not one of reported, computed", pl.col("cost_source")),
        )
    )
    frame = _checks_then_reason(frame, checks)
    cost = _number("cost_usd")
    return frame.with_columns(
        pl.col("trace_id").str.strip_chars(),
        pl.col("_timestamp").alias("timestamp"),
        pl.col("model").str.strip_chars(),
        _number("input_tokens").round(0).cast(pl.Int64, strict=False).alias("input_tokens"),
        _number("output_tokens").round(0).cast(pl.Int64, strict=False).alias("output_tokens"),
        cost.alias("cost_usd"),
        # A cost the source gave is a reported cost unless it says it computed it itself.
        pl.when(cost.is_not_null()).then(pl.col("cost_source").fill_null("reported")).alias("cost_source"),
        _number("latency_ms").alias("latency_ms"),
        pl.col("metadata").fill_null("{}"),
    ).drop("_timestamp")


def type_feedback(frame: pl.DataFrame) -> pl.DataFrame:
    """Text-typed feedback fields to canonical types, with ``_reason`` set on the first failed check."""
    lowered_value = pl.col("value").str.strip_chars().str.to_lowercase()
    boolean_value = pl.when(lowered_value == "true").then(1.0).when(lowered_value == "false").then(0.0)
    value = pl.coalesce(boolean_value, _number("value"))
    kind = pl.col("kind").str.strip_chars().str.to_lowercase()
    source = pl.col("source").str.strip_chars().str.to_lowercase().fill_null("user")
    frame = frame.with_columns(parse_timestamp(pl.col("timestamp")).alias("_timestamp"))
    checks: list[tuple[str, pl.Expr, pl.Expr]] = [
        (
            "wrong_type",
            pl.col("value").is_not_null() & (value.is_null() | value.is_nan() | value.is_infinite()),
            pl.format("value: {} is not a number or boolean", pl.col("value")),
        ),
    ]
    for name in ("trace_id", "timestamp", "kind"):
        checks.append(("missing_field", _blank(name), pl.lit(f"{name}: required")))
    checks.append(
        ("missing_field", (kind == "edited") & _blank("edited_output"), pl.lit("edited_output: required when kind is edited"))
    )
    checks.append(("unparsable_timestamp", pl.col("_timestamp").is_null(), pl.format("timestamp: cannot parse {}", pl.col("timestamp").str.slice(0, 80))))
    checks.append(("invalid_value", ~kind.is_in(list(FEEDBACK_KINDS)), pl.format(f"kind: {{}} is not one of {', '.join(FEEDBACK_KINDS)}", pl.col("kind"))))
    checks.append(("invalid_value", ~source.is_in(list(FEEDBACK_SOURCES)), pl.format(f"source: {{}} is not one of {', '.join(FEEDBACK_SOURCES)}", pl.col("source"))))
    frame = _checks_then_reason(frame, checks)
    frame = frame.with_columns(
        pl.col("trace_id").str.strip_chars(),
        pl.col("_timestamp").alias("timestamp"),
        kind.alias("kind"),
        value.alias("value"),
        source.alias("source"),
    ).drop("_timestamp")
    # Feedback rarely carries its own id: derive one from the content, so an identical re-sent
    # event collapses as a duplicate while two different events on one trace both stay.
    content = pl.struct("trace_id", "timestamp", "kind", "value", "label", "edited_output", "source", "annotator_id")
    derived = pl.lit("fb_") + content.hash(seed=0).cast(pl.String) + pl.lit("_") + content.hash(seed=1).cast(pl.String)
    return frame.with_columns(
        pl.when(_blank("feedback_id")).then(derived).otherwise(pl.col("feedback_id").str.strip_chars()).alias("feedback_id")
    )
