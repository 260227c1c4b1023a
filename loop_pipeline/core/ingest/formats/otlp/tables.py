"""Tables of decoded export requests: one row per span, attributes pivoted to columns, and the
message attributes (JSON text) rendered as canonical messages."""

from __future__ import annotations

import polars as pl

from loop_pipeline.core.ingest.formats.messages import ROLE_ALIASES
from loop_pipeline.core.ingest.formats.otlp.decoding import MESSAGES_JSON, PARTS_JSON, decode_flagged
from loop_pipeline.schemas.traces import MESSAGES_DTYPE

_SLOW_MESSAGE = r'"(?:tool_calls|function_call|additional_kwargs|message\.[a-z_]+)"\s*:'
_TEXT_PARTS = ["text", "input_text", "output_text"]


def spans_of(decoded: pl.DataFrame) -> pl.DataFrame:
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


def pivot(long: pl.DataFrame, keys: tuple[str, ...], prefix: str) -> pl.DataFrame:
    """Long (``_row``, ``key``, ``text``) rows to one column per key (first value wins)."""
    wanted = long.filter(pl.col("key").is_in(list(keys)))
    columns = [pl.col("text").filter(pl.col("key") == key).first().alias(f"{prefix}{key}") for key in keys]
    return wanted.group_by("_row").agg(columns)


def messages_column(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """JSON text of ``[{role, parts: [{type: text, content}]}]`` to canonical messages; the rest flagged."""
    screen = ~pl.col("raw").str.strip_chars_start().str.starts_with("[") | pl.col("raw").str.contains(_SLOW_MESSAGE)
    candidates = values.to_frame("raw").select(pl.when(~screen.fill_null(False)).then(pl.col("raw"))).to_series()
    decoded, failed = decode_flagged(candidates, MESSAGES_JSON)
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


def system_column(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    screen = ~pl.col("raw").str.strip_chars_start().str.starts_with("[")
    candidates = values.to_frame("raw").select(pl.when(~screen.fill_null(False)).then(pl.col("raw"))).to_series()
    decoded, failed = decode_flagged(candidates, PARTS_JSON)
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
