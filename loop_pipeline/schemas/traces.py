"""The canonical trace: one row per LLM call, tied to everything else by ``trace_id``."""

from __future__ import annotations

from typing import Annotated, Optional

import pandera.polars as pa
import polars as pl

MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
COST_SOURCES = ("reported", "computed")
UTC_MICROS = Annotated[pl.Datetime, "us", "UTC"]


class TraceSchema(pa.DataFrameModel):
    trace_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    timestamp: UTC_MICROS = pa.Field()
    task_type: Optional[str] = pa.Field(nullable=True)
    app: Optional[str] = pa.Field(nullable=True)
    model: str = pa.Field(str_length={"min_value": 1})
    provider: Optional[str] = pa.Field(nullable=True)
    messages: MESSAGES_DTYPE = pa.Field()
    output: str = pa.Field()
    input_tokens: Optional[int] = pa.Field(nullable=True, ge=0)
    output_tokens: Optional[int] = pa.Field(nullable=True, ge=0)
    cost_usd: Optional[float] = pa.Field(nullable=True, ge=0)
    cost_source: Optional[str] = pa.Field(nullable=True, isin=list(COST_SOURCES))
    latency_ms: Optional[float] = pa.Field(nullable=True, ge=0)
    user_id: Optional[str] = pa.Field(nullable=True)
    session_id: Optional[str] = pa.Field(nullable=True)
    prompt_version: Optional[str] = pa.Field(nullable=True)
    # A JSON object as text: free-form keys differ per app and would not fit one struct type.
    metadata: str = pa.Field()
    source_format: str = pa.Field()
    source_file: str = pa.Field()
    source_record: int = pa.Field(ge=1)

    @pa.dataframe_check
    def messages_not_empty(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("messages").list.len() > 0)

    class Config:
        strict = True
        coerce = True


TRACE_COLUMNS: tuple[str, ...] = tuple(TraceSchema.to_schema().columns)
